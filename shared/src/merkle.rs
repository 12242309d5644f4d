//! The transparency log's Merkle tree: RFC 9162 §2.1 hashing, inclusion and consistency proofs.
//!
//! Hashing (RFC 9162 §2.1.1, the same as RFC 6962 §2.1): SHA-256; the empty tree's hash is
//! `SHA-256("")`; a leaf's hash is `SHA-256(0x00 ‖ entry)`; an interior node's hash is
//! `SHA-256(0x01 ‖ left ‖ right)`, where a tree of `n > 1` leaves splits at `k`, the largest power
//! of two smaller than `n`. A Wattest log entry is a certificate's compact JWS as ASCII bytes.
//!
//! Proof *generation* works over stored hashes of complete subtrees ([`NodeId`]): the hash of
//! leaves `[index·2^level, (index+1)·2^level)`. A log that stores every complete subtree as it
//! appends (two writes per leaf, amortised) answers any proof with O(log n) lookups; the oracle
//! does that in its database. Proof *verification* ([`verify_inclusion`], [`verify_consistency`])
//! follows RFC 9162 §2.1.3.2 and §2.1.4.2 step by step.

use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// A SHA-256 hash, 32 bytes.
pub type Hash = [u8; 32];

/// A complete subtree: leaves `[index·2^level, (index+1)·2^level)`. Level 0 is a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// Height above the leaves (0 = leaf).
    pub level: u8,
    /// Position among the subtrees of this level, from the left.
    pub index: u64,
}

/// Why a proof was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    /// Indices or sizes that cannot describe a proof (leaf beyond the tree, first > second…).
    #[error("invalid proof request: {0}")]
    InvalidRange(String),
    /// The proof has the wrong number of hashes for the sizes.
    #[error("proof has the wrong length for these sizes")]
    WrongLength,
    /// The recomputed root differs from the expected one.
    #[error("proof does not lead to the expected root hash")]
    RootMismatch,
    /// A stored subtree hash the proof needs is missing (the log store is incomplete).
    #[error("log store lacks the hash of subtree level {} index {}", .0.level, .0.index)]
    MissingNode(NodeId),
}

/// `SHA-256("")`: the root hash of the empty tree (RFC 9162 §2.1.1).
#[must_use]
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// `SHA-256(0x00 ‖ entry)`.
#[must_use]
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
#[must_use]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly smaller than `n` (`n ≥ 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The root hash of a whole list of leaf hashes, computed directly (for tests and small trees).
#[must_use]
pub fn root_from_leaves(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = usize::try_from(split_point(n as u64)).unwrap_or(n / 2);
            node_hash(
                &root_from_leaves(&leaves[..k]),
                &root_from_leaves(&leaves[k..]),
            )
        }
    }
}

/// The complete subtrees finished by appending leaf number `index` (0-based), lowest first,
/// excluding the leaf itself: each is `node_hash(left sibling, the previous one)`. A log stores
/// these as it appends; see [`append_nodes`].
#[must_use]
pub fn completed_by(index: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    let mut level = 1u8;
    let size = index + 1;
    while level < 64 && size.is_multiple_of(1u64 << level) {
        out.push(NodeId {
            level,
            index: size / (1u64 << level) - 1,
        });
        level += 1;
    }
    out
}

/// The hashes to store when leaf `index` with hash `leaf` is appended: the leaf itself and every
/// complete subtree it finishes. `left_siblings` looks up already-stored subtrees (the left
/// sibling at each level); they are all complete subtrees of the log before this append.
///
/// # Errors
/// [`ProofError::MissingNode`] when a left sibling is not stored.
pub fn append_nodes(
    index: u64,
    leaf: Hash,
    mut left_siblings: impl FnMut(NodeId) -> Option<Hash>,
) -> Result<Vec<(NodeId, Hash)>, ProofError> {
    let mut out = vec![(NodeId { level: 0, index }, leaf)];
    let mut current = leaf;
    for node in completed_by(index) {
        let left = NodeId {
            level: node.level - 1,
            index: node.index * 2,
        };
        let left_hash = left_siblings(left).ok_or(ProofError::MissingNode(left))?;
        current = node_hash(&left_hash, &current);
        out.push((node, current));
    }
    Ok(out)
}

/// Hash of leaves `[start, end)` where `start` is a multiple of the largest power of two not
/// exceeding `end − start` (every range that RFC 9162's proofs and roots use has this form), from
/// complete-subtree hashes: O(log n) lookups.
fn range_hash(
    start: u64,
    end: u64,
    lookup: &mut impl FnMut(NodeId) -> Option<Hash>,
) -> Result<Hash, ProofError> {
    let n = end - start;
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && start.is_multiple_of(n) {
        let node = NodeId {
            level: u8::try_from(n.trailing_zeros()).unwrap_or(u8::MAX),
            index: start / n,
        };
        return lookup(node).ok_or(ProofError::MissingNode(node));
    }
    let k = split_point(n);
    let left = range_hash(start, start + k, lookup)?;
    let right = range_hash(start + k, end, lookup)?;
    Ok(node_hash(&left, &right))
}

/// The root hash of the first `size` leaves, from complete-subtree hashes.
///
/// # Errors
/// [`ProofError::MissingNode`].
pub fn root(size: u64, mut lookup: impl FnMut(NodeId) -> Option<Hash>) -> Result<Hash, ProofError> {
    range_hash(0, size, &mut lookup)
}

/// RFC 9162 §2.1.3.1 `PATH(m, D[start:end])`.
fn path(
    m: u64,
    start: u64,
    end: u64,
    lookup: &mut impl FnMut(NodeId) -> Option<Hash>,
    out: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    let n = end - start;
    if n <= 1 {
        return Ok(());
    }
    let k = split_point(n);
    if m < k {
        path(m, start, start + k, lookup, out)?;
        out.push(range_hash(start + k, end, lookup)?);
    } else {
        path(m - k, start + k, end, lookup, out)?;
        out.push(range_hash(start, start + k, lookup)?);
    }
    Ok(())
}

/// RFC 9162 §2.1.4.1 `SUBPROOF(m, D[start:end], b)`.
fn subproof(
    m: u64,
    start: u64,
    end: u64,
    complete: bool,
    lookup: &mut impl FnMut(NodeId) -> Option<Hash>,
    out: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(range_hash(start, end, lookup)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, start, start + k, complete, lookup, out)?;
        out.push(range_hash(start + k, end, lookup)?);
    } else {
        subproof(m - k, start + k, end, false, lookup, out)?;
        out.push(range_hash(start, start + k, lookup)?);
    }
    Ok(())
}

/// The subtrees that [`inclusion_proof`] or [`consistency_proof`] will look up, so a store can
/// fetch them in one query. `proof` runs the generator with a recording lookup.
#[must_use]
pub fn nodes_needed(
    proof: impl FnOnce(&mut dyn FnMut(NodeId) -> Option<Hash>) -> Result<Vec<Hash>, ProofError>,
) -> Vec<NodeId> {
    let mut seen = Vec::new();
    let mut record = |node: NodeId| {
        seen.push(node);
        Some([0u8; 32])
    };
    // The structure of a proof never depends on hash values, so a dry run with zero hashes
    // visits exactly the nodes the real run will.
    let _ = proof(&mut record);
    seen.sort_unstable();
    seen.dedup();
    seen
}

/// The audit path of leaf `index` in the tree of the first `size` leaves (RFC 9162 §2.1.3.1).
///
/// # Errors
/// [`ProofError::InvalidRange`] when `index ≥ size`; [`ProofError::MissingNode`].
pub fn inclusion_proof(
    index: u64,
    size: u64,
    mut lookup: impl FnMut(NodeId) -> Option<Hash>,
) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::InvalidRange(format!(
            "leaf {index} is not in a tree of size {size}"
        )));
    }
    let mut out = Vec::new();
    path(index, 0, size, &mut lookup, &mut out)?;
    Ok(out)
}

/// The consistency proof between the trees of the first `first` and `second` leaves
/// (RFC 9162 §2.1.4.1); empty when `first == second`.
///
/// # Errors
/// [`ProofError::InvalidRange`] unless `0 < first ≤ second`; [`ProofError::MissingNode`].
pub fn consistency_proof(
    first: u64,
    second: u64,
    mut lookup: impl FnMut(NodeId) -> Option<Hash>,
) -> Result<Vec<Hash>, ProofError> {
    if first == 0 || first > second {
        return Err(ProofError::InvalidRange(format!(
            "no consistency proof from size {first} to size {second} (need 0 < first ≤ second)"
        )));
    }
    let mut out = Vec::new();
    if first < second {
        subproof(first, 0, second, true, &mut lookup, &mut out)?;
    }
    Ok(out)
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
///
/// # Errors
/// [`ProofError::InvalidRange`], [`ProofError::WrongLength`] or [`ProofError::RootMismatch`].
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::InvalidRange(format!(
            "leaf {index} is not in a tree of size {size}"
        )));
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies a consistency proof between two tree heads (RFC 9162 §2.1.4.2).
///
/// # Errors
/// [`ProofError::InvalidRange`], [`ProofError::WrongLength`] or [`ProofError::RootMismatch`].
pub fn verify_consistency(
    first: u64,
    second: u64,
    proof: &[Hash],
    first_root: &Hash,
    second_root: &Hash,
) -> Result<(), ProofError> {
    if first == 0 || first > second {
        return Err(ProofError::InvalidRange(format!(
            "no consistency proof from size {first} to size {second} (need 0 < first ≤ second)"
        )));
    }
    if first == second {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if first_root == second_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    // Step 2: a power-of-two first tree is itself a node of the second tree.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut f_n, mut s_n) = (first - 1, second - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr != first_root || &sr != second_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// An in-memory store of complete subtrees, for tests, tools and benchmarks.
#[derive(Debug, Default, Clone)]
pub struct MemoryTree {
    nodes: HashMap<NodeId, Hash>,
    size: u64,
}

impl MemoryTree {
    /// An empty tree.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends an entry (hashing it as a leaf); returns its index.
    pub fn push(&mut self, entry: &[u8]) -> u64 {
        self.push_hash(leaf_hash(entry))
    }

    /// Appends a leaf hash; returns its index.
    pub fn push_hash(&mut self, leaf: Hash) -> u64 {
        let index = self.size;
        let nodes = &self.nodes;
        // Every left sibling is a complete subtree already stored, so this cannot fail.
        let new = append_nodes(index, leaf, |id| nodes.get(&id).copied()).unwrap_or_default();
        self.nodes.extend(new);
        self.size += 1;
        index
    }

    /// A stored complete subtree.
    #[must_use]
    pub fn node(&self, id: NodeId) -> Option<Hash> {
        self.nodes.get(&id).copied()
    }

    /// Root of the first `size` leaves.
    ///
    /// # Errors
    /// [`ProofError`] when `size` exceeds the tree.
    pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
        if size > self.size {
            return Err(ProofError::InvalidRange(format!(
                "size {size} exceeds the tree ({})",
                self.size
            )));
        }
        root(size, |id| self.node(id))
    }

    /// Inclusion proof of `index` in the tree of `size` leaves.
    ///
    /// # Errors
    /// [`ProofError`].
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        if size > self.size {
            return Err(ProofError::InvalidRange(format!(
                "size {size} exceeds the tree ({})",
                self.size
            )));
        }
        inclusion_proof(index, size, |id| self.node(id))
    }

    /// Consistency proof from `first` to `second` leaves.
    ///
    /// # Errors
    /// [`ProofError`].
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, ProofError> {
        if second > self.size {
            return Err(ProofError::InvalidRange(format!(
                "size {second} exceeds the tree ({})",
                self.size
            )));
        }
        consistency_proof(first, second, |id| self.node(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(h: &Hash) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The eight leaves of the RFC 6962 reference tests (certificate-transparency-go
    /// `merkletree` test data / Go `crypto` `tlog` tests): "", 00, 10, 2021, 3031, 40414243,
    /// 5051525354555657, 606162636465666768696a6b6c6d6e6f.
    fn reference_leaves() -> Vec<Vec<u8>> {
        vec![
            vec![],
            vec![0x00],
            vec![0x10],
            vec![0x20, 0x21],
            vec![0x30, 0x31],
            vec![0x40, 0x41, 0x42, 0x43],
            vec![0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            (0x60..=0x6f).collect(),
        ]
    }

    #[test]
    fn reference_roots_match_published_vectors() {
        // Roots of the first n reference leaves, as published with the RFC 6962 reference tests.
        let expected = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let mut tree = MemoryTree::new();
        let mut leaves = Vec::new();
        for (i, entry) in reference_leaves().iter().enumerate() {
            tree.push(entry);
            leaves.push(leaf_hash(entry));
            assert_eq!(
                hex(&tree.root(i as u64 + 1).expect("root")),
                expected[i],
                "n = {}",
                i + 1
            );
            assert_eq!(
                root_from_leaves(&leaves),
                tree.root(i as u64 + 1).expect("root")
            );
        }
        assert_eq!(
            hex(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn reference_inclusion_and_consistency_proofs() {
        let mut tree = MemoryTree::new();
        for entry in reference_leaves() {
            tree.push(&entry);
        }
        // Inclusion of leaf 0 in the tree of 8 (published path).
        let path: Vec<String> = tree
            .inclusion_proof(0, 8)
            .expect("proof")
            .iter()
            .map(hex)
            .collect();
        assert_eq!(
            path,
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ]
        );
        // Consistency 1 → 8 and 6 → 8 (published proofs).
        let c: Vec<String> = tree
            .consistency_proof(1, 8)
            .expect("proof")
            .iter()
            .map(hex)
            .collect();
        assert_eq!(
            c,
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ]
        );
        let c: Vec<String> = tree
            .consistency_proof(6, 8)
            .expect("proof")
            .iter()
            .map(hex)
            .collect();
        assert_eq!(
            c,
            [
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]
        );
        let c: Vec<String> = tree
            .consistency_proof(2, 5)
            .expect("proof")
            .iter()
            .map(hex)
            .collect();
        assert_eq!(
            c,
            [
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ]
        );
    }

    #[test]
    fn bad_requests_are_refused() {
        let mut tree = MemoryTree::new();
        tree.push(b"a");
        assert!(tree.inclusion_proof(1, 1).is_err());
        assert!(tree.consistency_proof(0, 1).is_err());
        assert!(tree.consistency_proof(2, 1).is_err());
        assert!(tree.root(2).is_err());
        let r = tree.root(1).expect("root");
        assert_eq!(verify_inclusion(&leaf_hash(b"a"), 0, 1, &[], &r), Ok(()));
        assert_eq!(
            verify_inclusion(&leaf_hash(b"a"), 0, 1, &[r], &r),
            Err(ProofError::WrongLength)
        );
        assert_eq!(verify_consistency(1, 1, &[], &r, &r), Ok(()));
        assert!(verify_consistency(1, 2, &[], &r, &r).is_err());
    }

    fn build(n: usize) -> (MemoryTree, Vec<Hash>) {
        let mut tree = MemoryTree::new();
        let mut leaves = Vec::with_capacity(n);
        for i in 0..n {
            let entry = format!("entry-{i}");
            tree.push(entry.as_bytes());
            leaves.push(leaf_hash(entry.as_bytes()));
        }
        (tree, leaves)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn every_leaf_of_random_trees_is_provable(n in 1usize..300) {
            let (tree, leaves) = build(n);
            let size = n as u64;
            let root = tree.root(size).expect("root");
            prop_assert_eq!(root, root_from_leaves(&leaves));
            for (i, leaf) in leaves.iter().enumerate() {
                let proof = tree.inclusion_proof(i as u64, size).expect("proof");
                prop_assert_eq!(verify_inclusion(leaf, i as u64, size, &proof, &root), Ok(()));
            }
        }

        #[test]
        fn tampered_inclusion_proofs_fail(n in 2usize..200, pick in any::<prop::sample::Index>(), byte in 0usize..32, hop in any::<prop::sample::Index>()) {
            let (tree, leaves) = build(n);
            let size = n as u64;
            let root = tree.root(size).expect("root");
            let i = pick.index(n);
            let mut proof = tree.inclusion_proof(i as u64, size).expect("proof");
            // Wrong leaf, wrong index, flipped hash, truncated and extended proofs all fail.
            let other = leaves[(i + 1) % n];
            prop_assert!(verify_inclusion(&other, i as u64, size, &proof, &root).is_err());
            prop_assert!(verify_inclusion(&leaves[i], ((i + 1) % n) as u64, size, &proof, &root).is_err());
            if !proof.is_empty() {
                let h = hop.index(proof.len());
                let mut bad = proof.clone();
                bad[h][byte] ^= 1;
                prop_assert!(verify_inclusion(&leaves[i], i as u64, size, &bad, &root).is_err());
                let short = &proof[..proof.len() - 1];
                prop_assert!(verify_inclusion(&leaves[i], i as u64, size, short, &root).is_err());
            }
            proof.push([7u8; 32]);
            prop_assert!(verify_inclusion(&leaves[i], i as u64, size, &proof, &root).is_err());
        }

        #[test]
        fn consistency_between_random_sizes(n in 1usize..260, a in any::<prop::sample::Index>(), byte in 0usize..32) {
            let (tree, _) = build(n);
            let second = n as u64;
            let first = a.index(n) as u64 + 1;
            let (r1, r2) = (tree.root(first).expect("r1"), tree.root(second).expect("r2"));
            let proof = tree.consistency_proof(first, second).expect("proof");
            prop_assert_eq!(verify_consistency(first, second, &proof, &r1, &r2), Ok(()));
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let last = bad.len() - 1;
                bad[last][byte] ^= 1;
                prop_assert!(verify_consistency(first, second, &bad, &r1, &r2).is_err());
                prop_assert!(verify_consistency(first, second, &proof, &r2, &r1).is_err() || r1 == r2);
            }
            if first < second {
                // A different (forked) first tree is not consistent.
                let forked = node_hash(&r1, &r1);
                prop_assert!(verify_consistency(first, second, &proof, &forked, &r2).is_err());
            }
        }

        #[test]
        fn dry_run_names_exactly_the_nodes_used(n in 1usize..200, a in any::<prop::sample::Index>()) {
            let (tree, _) = build(n);
            let size = n as u64;
            let i = a.index(n) as u64;
            let needed = nodes_needed(|l| inclusion_proof(i, size, l));
            let map: HashMap<NodeId, Hash> = needed.iter().map(|id| (*id, tree.node(*id).expect("stored"))).collect();
            let proof = inclusion_proof(i, size, |id| map.get(&id).copied()).expect("proof from fetched nodes");
            prop_assert_eq!(proof, tree.inclusion_proof(i, size).expect("proof"));
            let needed = nodes_needed(|l| root(size, l).map(|r| vec![r]));
            prop_assert!(needed.len() <= 64);
        }
    }
}
