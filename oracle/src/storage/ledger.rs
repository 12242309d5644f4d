//! Storage of the transparency log (leaves, complete-subtree hashes, the head) and of
//! certificate revocations.

use super::{Storage, StorageError};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, CommonTableExpression, Expr, InsertStatement, WithClause};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter,
    QuerySelect, QueryTrait, Set,
};
use std::collections::HashMap;
use wattest_shared::merkle::{self, Hash, NodeId, ProofError};

/// Leaf index → certificate.
pub mod log_leaf {
    use sea_orm::entity::prelude::*;

    /// A leaf row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "log_leaves")]
    pub struct Model {
        /// Leaf index (0-based).
        #[sea_orm(primary_key, auto_increment = false)]
        pub idx: i64,
        /// The certificate whose compact JWS is the leaf entry.
        #[sea_orm(unique)]
        pub certificate_id: String,
        /// When it was appended.
        pub appended_at: DateTimeUtc,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Hash of every complete subtree.
pub mod log_node {
    use sea_orm::entity::prelude::*;

    /// A subtree row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "log_nodes")]
    pub struct Model {
        /// Height (0 = leaf).
        #[sea_orm(primary_key, auto_increment = false)]
        pub level: i16,
        /// Index within the level.
        #[sea_orm(primary_key, auto_increment = false)]
        pub idx: i64,
        /// SHA-256, 32 bytes.
        pub hash: Vec<u8>,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The log head: one row, id 1.
pub mod log_head {
    use sea_orm::entity::prelude::*;

    /// The head row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "log_head")]
    pub struct Model {
        /// Always 1.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        /// Number of leaves.
        pub size: i64,
        /// Root hash of those leaves.
        pub root_hash: Vec<u8>,
        /// Last append.
        pub updated_at: DateTimeUtc,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Revoked certificates.
pub mod revocation {
    use sea_orm::entity::prelude::*;

    /// A revocation row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "certificate_revocations")]
    pub struct Model {
        /// Certificate id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub certificate_id: String,
        /// When.
        pub revoked_at: DateTimeUtc,
        /// Why (one of the documented reason codes).
        pub reason: String,
    }

    /// No relations declared.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The log's size and root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHead {
    /// Number of leaves.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
}

/// The log's next leaf index, taken (and on PostgreSQL locked) in a transaction, with the
/// stored subtrees an append there needs: [`Storage::reserve_log`].
#[derive(Debug)]
pub struct LogSlot {
    index: u64,
    stored: HashMap<NodeId, Hash>,
}

/// Where an appended certificate landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Its leaf index.
    pub index: u64,
    /// The head after the append.
    pub head: LogHead,
}

/// Subtrees fetched per query: each is an `(level = ? AND idx = ?)` term of one OR, and 200 terms
/// stay far below SQLite's default expression-depth limit of 1000 (SQLITE_MAX_EXPR_DEPTH). A
/// proof on a log of 2⁶⁴ leaves needs at most 2 × 64 subtrees, so one query always suffices.
const NODES_PER_QUERY: usize = 200;

fn to_hash(bytes: &[u8]) -> Result<Hash, StorageError> {
    bytes
        .try_into()
        .map_err(|_| StorageError::Corrupt("a stored log hash is not 32 bytes".into()))
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Storage {
    /// Reads stored complete subtrees in one query.
    async fn log_nodes(
        &self,
        db: &impl ConnectionTrait,
        ids: &[NodeId],
    ) -> Result<HashMap<NodeId, Hash>, StorageError> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(NODES_PER_QUERY) {
            let mut any = sea_orm::Condition::any();
            // The statement's shape (its number of terms) is rounded up to a power of two by
            // repeating the last id, so a connection prepares a handful of statements once
            // instead of one per distinct count (sqlx caches prepared statements by SQL text).
            let shape = chunk.len().next_power_of_two().clamp(8, NODES_PER_QUERY);
            let padding = chunk.last().into_iter().cycle().take(shape - chunk.len());
            for id in chunk.iter().chain(padding) {
                any = any.add(
                    sea_orm::Condition::all()
                        .add(log_node::Column::Level.eq(i16::from(id.level)))
                        .add(log_node::Column::Idx.eq(i64_of(id.index))),
                );
            }
            for row in log_node::Entity::find().filter(any).all(db).await? {
                let id = NodeId {
                    level: u8::try_from(row.level).unwrap_or(u8::MAX),
                    index: u64::try_from(row.idx).unwrap_or(u64::MAX),
                };
                out.insert(id, to_hash(&row.hash)?);
            }
        }
        Ok(out)
    }

    /// The current head.
    ///
    /// # Errors
    /// Database failure or a missing head row.
    pub async fn log_head(&self) -> Result<LogHead, StorageError> {
        head(self.db()).await
    }

    /// Appends `entry` (a certificate's compact JWS) as the next leaf, inside `txn`: locks the
    /// head row (PostgreSQL `SELECT … FOR UPDATE`, so replicas append one at a time; SQLite has
    /// one writer), stores the leaf and the subtrees it completes, and moves the head.
    ///
    /// # Errors
    /// Database failure, or a store missing a subtree it should have ([`StorageError::Corrupt`]).
    pub async fn append_log(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        certificate_id: &str,
        entry: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Appended, StorageError> {
        let slot = self.reserve_log(txn).await?;
        self.write_log(txn, slot, None, certificate_id, entry, now)
            .await
    }

    /// Locks the log head inside `txn` until it ends (PostgreSQL `SELECT … FOR UPDATE`; SQLite
    /// has one writer): a transaction that will issue a certificate takes it before any node
    /// row, so transactions of replicas lock in one order (log head, then nodes by id) and
    /// cannot deadlock on a node row against the log head ([`Storage::reserve_log`] locks it
    /// again, which is then a no-op).
    ///
    /// # Errors
    /// Database failure.
    pub async fn lock_log_head(
        &self,
        txn: &sea_orm::DatabaseTransaction,
    ) -> Result<(), StorageError> {
        if txn.get_database_backend() == DatabaseBackend::Postgres {
            log_head::Entity::find_by_id(1)
                .lock_exclusive()
                .one(txn)
                .await?;
        }
        Ok(())
    }

    /// Takes the log's next leaf index inside `txn` and reads the stored subtrees an append
    /// there needs (the left siblings of the subtrees it completes and those of the new root).
    /// Neither depends on the entry, so issuance runs this while the certificate is signed. The
    /// head row stays locked until `txn` ends (PostgreSQL `SELECT … FOR UPDATE`: one sequencer
    /// across replicas; SQLite has one writer).
    ///
    /// # Errors
    /// Database failure, or a missing head row ([`StorageError::Corrupt`]).
    pub async fn reserve_log(
        &self,
        txn: &sea_orm::DatabaseTransaction,
    ) -> Result<LogSlot, StorageError> {
        let mut query = log_head::Entity::find_by_id(1);
        if txn.get_database_backend() == DatabaseBackend::Postgres {
            query = query.lock_exclusive();
        }
        let row = query
            .one(txn)
            .await?
            .ok_or_else(|| StorageError::Corrupt("the log head row is missing".into()))?;
        let index = u64::try_from(row.size).unwrap_or(0);
        let size = index + 1;
        // The subtrees this append completes (the leaf and its new ancestors) are computed; every
        // other hash the append and the new root need is already stored: one query fetches them.
        let mut created = vec![NodeId { level: 0, index }];
        created.extend(merkle::completed_by(index));
        let mut wanted: Vec<NodeId> = created[1..]
            .iter()
            .map(|n| NodeId {
                level: n.level - 1,
                index: n.index * 2,
            })
            .chain(merkle::nodes_needed(|l| {
                merkle::root(size, l).map(|r| vec![r])
            }))
            .filter(|id| !created.contains(id))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let stored = self.log_nodes(txn, &wanted).await?;
        Ok(LogSlot { index, stored })
    }

    /// Stores `entry` as the leaf at `slot`, the subtrees it completes and the new head, after
    /// `preceding` (the certificate row's insert, when there is one). On PostgreSQL the writes
    /// are one statement: each insert a data-modifying CTE of the head's update, which
    /// PostgreSQL runs in full, checking constraints at the statement's end (one round trip
    /// instead of four on the issuance path, `docs/performance.md`).
    pub(super) async fn write_log(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        slot: LogSlot,
        preceding: Option<InsertStatement>,
        certificate_id: &str,
        entry: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Appended, StorageError> {
        let LogSlot { index, mut stored } = slot;
        let size = index + 1;
        let new = merkle::append_nodes(index, merkle::leaf_hash(entry), |id| {
            stored.get(&id).copied()
        })
        .map_err(|err| StorageError::Corrupt(err.to_string()))?;
        stored.extend(new.iter().copied());
        let root = merkle::root(size, |id| stored.get(&id).copied())
            .map_err(|err| StorageError::Corrupt(err.to_string()))?;

        let nodes =
            log_node::Entity::insert_many(new.iter().map(|(id, hash)| log_node::ActiveModel {
                level: Set(i16::from(id.level)),
                idx: Set(i64_of(id.index)),
                hash: Set(hash.to_vec()),
            }))
            .into_query();
        let leaf = log_leaf::Entity::insert(log_leaf::ActiveModel {
            idx: Set(i64_of(index)),
            certificate_id: Set(certificate_id.to_owned()),
            appended_at: Set(now),
        })
        .into_query();
        let head = log_head::Entity::update_many()
            .col_expr(log_head::Column::Size, Expr::value(i64_of(size)))
            .col_expr(log_head::Column::RootHash, Expr::value(root.to_vec()))
            .col_expr(log_head::Column::UpdatedAt, Expr::value(now))
            .filter(log_head::Column::Id.eq(1))
            .into_query();
        let inserts = preceding.into_iter().chain([nodes, leaf]);
        let moved = if txn.get_database_backend() == DatabaseBackend::Postgres {
            let mut with = WithClause::new();
            for (i, insert) in inserts.enumerate() {
                with.cte(
                    CommonTableExpression::new()
                        .table_name(Alias::new(format!("write_{i}")))
                        .query(insert)
                        .to_owned(),
                );
            }
            txn.execute(&with.query(head)).await?
        } else {
            for insert in inserts {
                txn.execute(&insert).await?;
            }
            txn.execute(&head).await?
        };
        if moved.rows_affected() != 1 {
            return Err(StorageError::Corrupt("the log head row is missing".into()));
        }
        Ok(Appended {
            index,
            head: LogHead { size, root },
        })
    }

    /// The leaf index of a certificate, if it is in the log.
    ///
    /// # Errors
    /// Database failure.
    pub async fn log_index(&self, certificate_id: &str) -> Result<Option<u64>, StorageError> {
        Ok(log_leaf::Entity::find()
            .filter(log_leaf::Column::CertificateId.eq(certificate_id))
            .one(self.db())
            .await?
            .and_then(|row| u64::try_from(row.idx).ok()))
    }

    /// The certificate at a leaf index.
    ///
    /// # Errors
    /// Database failure.
    pub async fn log_entry(&self, index: u64) -> Result<Option<String>, StorageError> {
        Ok(log_leaf::Entity::find_by_id(i64_of(index))
            .one(self.db())
            .await?
            .map(|row| row.certificate_id))
    }

    /// Runs a proof generator over stored subtrees: a dry run names the subtrees, one query
    /// fetches them, the real run computes the proof.
    ///
    /// # Errors
    /// Database failure; [`StorageError::Proof`] for an impossible request.
    pub async fn log_proof(
        &self,
        generate: impl Fn(&mut dyn FnMut(NodeId) -> Option<Hash>) -> Result<Vec<Hash>, ProofError>,
    ) -> Result<Vec<Hash>, StorageError> {
        let needed = merkle::nodes_needed(&generate);
        let nodes = self.log_nodes(self.db(), &needed).await?;
        let mut lookup = |id: NodeId| nodes.get(&id).copied();
        generate(&mut lookup).map_err(StorageError::Proof)
    }

    /// Records a revocation; revoking twice keeps the first.
    ///
    /// # Errors
    /// Database failure.
    pub async fn revoke_certificate(
        &self,
        certificate_id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<revocation::Model, StorageError> {
        if let Some(existing) = self.revocation(certificate_id).await? {
            return Ok(existing);
        }
        let txn = self.begin().await?;
        let inserted = revocation::ActiveModel {
            certificate_id: Set(certificate_id.to_owned()),
            revoked_at: Set(now),
            reason: Set(reason.to_owned()),
        }
        .insert(&*txn)
        .await;
        match inserted {
            Ok(row) => {
                txn.commit().await?;
                Ok(row)
            }
            // A concurrent revocation won the primary key: the first one stands.
            Err(err) => {
                drop(txn);
                self.revocation(certificate_id)
                    .await?
                    .ok_or(StorageError::Db(err))
            }
        }
    }

    /// A certificate's revocation, if revoked.
    ///
    /// # Errors
    /// Database failure.
    pub async fn revocation(
        &self,
        certificate_id: &str,
    ) -> Result<Option<revocation::Model>, StorageError> {
        Ok(revocation::Entity::find_by_id(certificate_id.to_owned())
            .one(self.db())
            .await?)
    }
}

async fn head(db: &impl ConnectionTrait) -> Result<LogHead, StorageError> {
    let row = log_head::Entity::find_by_id(1)
        .one(db)
        .await?
        .ok_or_else(|| StorageError::Corrupt("the log head row is missing".into()))?;
    Ok(LogHead {
        size: u64::try_from(row.size).unwrap_or(0),
        root: to_hash(&row.root_hash)?,
    })
}
