//! Thermal design power (TDP) per CPU model, looked up in the table CodeCarbon ships.
//!
//! Data: `agent/data/cpu_tdp_watts.csv` (`Name,TDP`, about 4,900 Intel and AMD models, W), from
//! CodeCarbon 3.3.2 (MIT licence), scraped by its authors from Intel and AMD specification pages;
//! attribution in `agent/data/README.md`.

use wattest_shared::Watts;

/// The embedded table (`Name,TDP` CSV).
pub const TDP_CSV: &str = include_str!("../../data/cpu_tdp_watts.csv");

/// TDP assumed for a CPU missing from the table: 85 W, CodeCarbon's value for unknown CPUs
/// (CodeCarbon 3.3.2, `codecarbon/core/cpu.py`).
pub const UNKNOWN_CPU_TDP: Watts = Watts(85.0);

/// How a TDP was found.
#[derive(Debug, Clone, PartialEq)]
pub enum TdpMatch {
    /// The normalised model name equals a table name.
    Exact {
        /// The table's name.
        name: String,
        /// Its TDP per socket.
        tdp: Watts,
    },
    /// The longest table name whose tokens all appear in the model name.
    Tokens {
        /// The table's name.
        name: String,
        /// Its TDP per socket.
        tdp: Watts,
    },
    /// Not found: [`UNKNOWN_CPU_TDP`].
    Fallback,
}

impl TdpMatch {
    /// The TDP per socket this match gives.
    #[must_use]
    pub fn tdp(&self) -> Watts {
        match self {
            Self::Exact { tdp, .. } | Self::Tokens { tdp, .. } => *tdp,
            Self::Fallback => UNKNOWN_CPU_TDP,
        }
    }
}

/// Normalises a CPU model name for lookup: lowercase; drops `(R)`, `(TM)`, the word `CPU`, the
/// clock (`@ 2.30GHz`), `N-Core Processor` and a trailing `Processor`; collapses blanks.
///
/// `"Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz"` → `"intel xeon platinum 8380"`;
/// `"AMD EPYC 7763 64-Core Processor"` → `"amd epyc 7763"`.
#[must_use]
pub fn normalise(model: &str) -> String {
    let lower = model
        .to_lowercase()
        .replace("(r)", " ")
        .replace("(tm)", " ");
    let lower = match lower.find('@') {
        Some(at) => &lower[..at],
        None => &lower,
    };
    let tokens: Vec<&str> = lower.split_whitespace().collect();
    let mut out: Vec<&str> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        let is_core_count = t
            .strip_suffix("-core")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_core_count {
            // "64-Core Processor": drop both words.
            if tokens.get(i + 1) == Some(&"processor") {
                i += 1;
            }
        } else if t != "cpu" && t != "processor" {
            out.push(t);
        }
        i += 1;
    }
    out.join(" ")
}

/// Looks `model` up in the embedded table: exact normalised match first, then the longest table
/// name whose tokens all appear in the model's tokens, else [`TdpMatch::Fallback`].
#[must_use]
pub fn lookup(model: &str) -> TdpMatch {
    lookup_in(TDP_CSV, model)
}

/// [`lookup`] in a given `Name,TDP` CSV text (header line first).
#[must_use]
pub fn lookup_in(csv: &str, model: &str) -> TdpMatch {
    let wanted = normalise(model);
    if wanted.is_empty() {
        return TdpMatch::Fallback;
    }
    let wanted_tokens: Vec<&str> = wanted.split(' ').collect();
    let mut best: Option<(usize, String, Watts)> = None;
    for (name, tdp) in rows(csv) {
        let norm = normalise(name);
        if norm.is_empty() {
            continue;
        }
        if norm == wanted {
            return TdpMatch::Exact {
                name: name.to_string(),
                tdp,
            };
        }
        if norm.split(' ').all(|t| wanted_tokens.contains(&t))
            && best.as_ref().is_none_or(|(len, _, _)| norm.len() > *len)
        {
            best = Some((norm.len(), name.to_string(), tdp));
        }
    }
    match best {
        Some((_, name, tdp)) => TdpMatch::Tokens { name, tdp },
        None => TdpMatch::Fallback,
    }
}

/// Rows of the CSV as `(name, tdp)`; the name may be double-quoted and hold commas, the TDP is
/// the last field. Malformed rows are skipped.
fn rows(csv: &str) -> impl Iterator<Item = (&str, Watts)> {
    csv.lines().skip(1).filter_map(|line| {
        let (name, tdp) = line.rsplit_once(',')?;
        let tdp: f64 = tdp.trim().parse().ok()?;
        let name = name.trim().trim_matches('"');
        (tdp.is_finite() && tdp > 0.0).then_some((name, Watts(tdp)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_drops_marketing_words() {
        assert_eq!(
            normalise("Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz"),
            "intel xeon platinum 8380"
        );
        assert_eq!(
            normalise("AMD EPYC 7763 64-Core Processor"),
            "amd epyc 7763"
        );
        assert_eq!(
            normalise("AMD Ryzen 9 5950X 16-Core Processor"),
            "amd ryzen 9 5950x"
        );
        assert_eq!(
            normalise("Intel(R) Core(TM) i7-8700K CPU @ 3.70GHz"),
            "intel core i7-8700k"
        );
    }

    #[test]
    fn table_lookups() {
        assert_eq!(
            lookup("Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz").tdp(),
            Watts(270.0)
        );
        assert_eq!(
            lookup("Intel(R) Core(TM) i7-8700K CPU @ 3.70GHz").tdp(),
            Watts(95.0)
        );
        assert_eq!(
            lookup("AMD Ryzen 9 5950X 16-Core Processor").tdp(),
            Watts(105.0)
        );
        assert!(matches!(
            lookup("AMD Ryzen Threadripper 3990X 64-Core Processor"),
            TdpMatch::Exact { .. }
        ));
    }

    #[test]
    fn token_match_takes_longest_name() {
        let csv = "Name,TDP\nXeon 8380,1\nIntel Xeon Platinum 8380,2\n\"Odd, name\",3\n";
        assert_eq!(
            lookup_in(csv, "Intel Xeon Platinum 8380 Extra Edition"),
            TdpMatch::Tokens {
                name: "Intel Xeon Platinum 8380".into(),
                tdp: Watts(2.0)
            }
        );
        assert!(matches!(
            lookup_in(csv, "odd, name"),
            TdpMatch::Exact { .. }
        ));
    }

    #[test]
    fn bare_family_name_falls_back() {
        // This build machine's /proc/cpuinfo says just "AMD EPYC": no model number, so no row
        // can be chosen honestly among ~150 EPYC parts from 65 W to 400 W.
        assert_eq!(lookup("AMD EPYC"), TdpMatch::Fallback);
        assert_eq!(lookup("AMD EPYC").tdp(), UNKNOWN_CPU_TDP);
        assert_eq!(lookup(""), TdpMatch::Fallback);
    }
}
