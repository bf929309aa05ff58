//! The code parameters of a job — P workers, redundancy r, tolerated liars s and stragglers
//! e — and every rule that makes them decodable. Errors name the DracoJob field and value.

use serde::{Deserialize, Serialize};

/// Largest supported cluster: bounds every allocation derived from the worker count.
pub const MAX_WORKERS: usize = 1024;

/// Cyclic code numerical envelope: the largest number of "data rows" `n_b - (r - 1)` a block
/// may have. Decoding solves a Vandermonde-like system on that many unit-circle points whose
/// conditioning grows exponentially with the count. With complex64 transport the worst decoded
/// sum measured 2.8e-5 relative at 20 rows, 1.3e-4 at 25 and 2.3e-3 at 35; up to 16 rows it
/// stays below 1e-5 (`cyclic::tests::complex64_precision_envelope` prints the table).
pub const MAX_CYCLIC_DATA_ROWS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum CodeKind {
    /// Groups of r workers compute the same vector; the PS takes a majority vote (exact).
    Repetition,
    /// Cyclic MDS-like code with Fourier decoding (tolerance-exact, any P >= r).
    Cyclic,
    /// No redundancy (r = 1): a statistical aggregator decides, approximately.
    None,
}

impl CodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CodeKind::Repetition => "repetition",
            CodeKind::Cyclic => "cyclic",
            CodeKind::None => "none",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scheme {
    pub code: CodeKind,
    /// P: number of workers (and of data partitions).
    pub workers: usize,
    /// r: how many workers compute each partition.
    pub redundancy: usize,
    /// s: how many workers may lie in each group/block.
    pub byzantine_tolerance: usize,
    /// e: how many workers per group/block may be missing (stragglers, crashes).
    pub straggler_tolerance: usize,
    /// Cyclic only: workers per block. `None` picks the fewest blocks inside the envelope.
    pub cyclic_block_size: Option<usize>,
}

/// A rule the scheme breaks, naming the DracoJob field and the offending value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("spec.{field}: {message}")]
pub struct SchemeError {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: String) -> SchemeError {
    SchemeError { field, message }
}

impl Scheme {
    /// A scheme without stragglers or explicit cyclic blocks (set those fields after, if needed).
    pub fn new(code: CodeKind, workers: usize, redundancy: usize, byzantine_tolerance: usize) -> Self {
        Scheme { code, workers, redundancy, byzantine_tolerance, straggler_tolerance: 0, cyclic_block_size: None }
    }

    /// Checks every rule; the first broken one is reported.
    pub fn validate(&self) -> Result<(), SchemeError> {
        let (p, r, s, e) = (self.workers, self.redundancy, self.byzantine_tolerance, self.straggler_tolerance);
        if p == 0 || p > MAX_WORKERS {
            return Err(invalid("workers", format!("must be between 1 and {MAX_WORKERS}, got {p}")));
        }
        if r == 0 || r > p {
            return Err(invalid("redundancy", format!("must be between 1 and workers ({p}), got {r}")));
        }
        // With code none there is no code to decode: s is the statistical rule's assumption
        // (checked against the aggregator), not a property of redundancy.
        let needed = s.saturating_mul(2).saturating_add(e);
        if self.code != CodeKind::None && needed > r - 1 {
            return Err(invalid(
                "byzantineTolerance",
                format!(
                    "2 * byzantineTolerance + stragglerTolerance must be <= redundancy - 1: \
                     2*{s} + {e} = {needed} > {r} - 1 = {}",
                    r - 1
                ),
            ));
        }
        if self.code == CodeKind::None && (s >= p || e > 0) {
            return Err(invalid(
                "byzantineTolerance",
                format!(
                    "code none: byzantineTolerance must be below workers ({p}) and stragglerTolerance 0, got {s} and {e}"
                ),
            ));
        }
        if self.cyclic_block_size.is_some() && self.code != CodeKind::Cyclic {
            return Err(invalid("cyclicBlockSize", format!("only applies to code cyclic, not {}", self.code.as_str())));
        }
        match self.code {
            CodeKind::None if r != 1 => Err(invalid(
                "redundancy",
                format!("code none computes every partition once: redundancy must be 1, got {r}"),
            )),
            CodeKind::Repetition if p % r != 0 => Err(invalid(
                "workers",
                format!("repetition code needs workers divisible by redundancy: {p} % {r} = {}", p % r),
            )),
            CodeKind::Cyclic => self.cyclic_blocks().map(|_| ()),
            _ => Ok(()),
        }
    }

    /// The block layout of the cyclic code: contiguous rank ranges, each running its own code.
    pub fn cyclic_blocks(&self) -> Result<Vec<std::ops::Range<usize>>, SchemeError> {
        let (p, r) = (self.workers, self.redundancy);
        let max_block = MAX_CYCLIC_DATA_ROWS + r - 1;
        let count = match self.cyclic_block_size {
            Some(size) if size < r || size > p => {
                return Err(invalid(
                    "cyclicBlockSize",
                    format!("must be between redundancy ({r}) and workers ({p}), got {size}"),
                ));
            }
            Some(size) if size - (r - 1) > MAX_CYCLIC_DATA_ROWS => {
                return Err(invalid(
                    "cyclicBlockSize",
                    format!(
                        "{size} is outside the cyclic code's numerical envelope: block size - (redundancy - 1) \
                         must be <= {MAX_CYCLIC_DATA_ROWS} (so block size <= {max_block} for redundancy {r}); \
                         use smaller blocks"
                    ),
                ));
            }
            Some(size) => p.div_ceil(size),
            None => p.div_ceil(max_block),
        };
        // Spread the ranks evenly: the first `p % count` blocks get one extra worker.
        let (base, extra) = (p / count, p % count);
        let blocks: Vec<_> = (0..count)
            .scan(0, |start, b| {
                let len = base + usize::from(b < extra);
                let block = *start..*start + len;
                *start += len;
                Some(block)
            })
            .collect();
        if let Some(b) = blocks.iter().find(|b| b.len() < r || b.len() - (r - 1) > MAX_CYCLIC_DATA_ROWS) {
            return Err(invalid(
                "workers",
                format!(
                    "{p} workers cannot be split into cyclic blocks of {r} to {max_block} workers (a block of {} results)",
                    b.len()
                ),
            ));
        }
        Ok(blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheme(code: CodeKind, p: usize, r: usize, s: usize, e: usize) -> Scheme {
        Scheme {
            code,
            workers: p,
            redundancy: r,
            byzantine_tolerance: s,
            straggler_tolerance: e,
            cyclic_block_size: None,
        }
    }

    #[test]
    fn accepts_the_paper_configurations() {
        assert_eq!(scheme(CodeKind::Repetition, 6, 3, 1, 0).validate(), Ok(()));
        assert_eq!(scheme(CodeKind::Repetition, 15, 5, 1, 2).validate(), Ok(()));
        assert_eq!(scheme(CodeKind::Cyclic, 15, 7, 3, 0).validate(), Ok(()));
        assert_eq!(scheme(CodeKind::None, 8, 1, 0, 0).validate(), Ok(()));
    }

    #[test]
    fn names_field_and_value() {
        let err = scheme(CodeKind::Repetition, 6, 3, 1, 1).validate().unwrap_err();
        assert_eq!(err.field, "byzantineTolerance");
        assert!(err.to_string().contains("2*1 + 1 = 3 > 3 - 1 = 2"), "{err}");
        let err = scheme(CodeKind::Repetition, 7, 3, 1, 0).validate().unwrap_err();
        assert_eq!(err.to_string(), "spec.workers: repetition code needs workers divisible by redundancy: 7 % 3 = 1");
        assert_eq!(scheme(CodeKind::None, 4, 3, 0, 0).validate().unwrap_err().field, "redundancy");
        assert_eq!(scheme(CodeKind::Cyclic, 4, 5, 0, 0).validate().unwrap_err().field, "redundancy");
        assert_eq!(scheme(CodeKind::Cyclic, 0, 1, 0, 0).validate().unwrap_err().field, "workers");
        assert_eq!(scheme(CodeKind::Cyclic, 5000, 1, 0, 0).validate().unwrap_err().field, "workers");
    }

    #[test]
    fn cyclic_blocks_stay_inside_the_envelope() {
        for p in 3..=200 {
            let sc = scheme(CodeKind::Cyclic, p, 3, 1, 0);
            let blocks = sc.cyclic_blocks().unwrap();
            assert_eq!(blocks.first().unwrap().start, 0);
            assert_eq!(blocks.last().unwrap().end, p);
            assert!(blocks.windows(2).all(|w| w[0].end == w[1].start));
            assert!(blocks.iter().all(|b| b.len() >= 3 && b.len() - 2 <= MAX_CYCLIC_DATA_ROWS), "p={p}");
        }
        assert_eq!(scheme(CodeKind::Cyclic, 14, 3, 1, 0).cyclic_blocks().unwrap(), vec![0..14]);
    }

    #[test]
    fn explicit_block_size_outside_envelope_is_refused() {
        let mut sc = scheme(CodeKind::Cyclic, 45, 11, 5, 0);
        sc.cyclic_block_size = Some(45);
        let err = sc.validate().unwrap_err();
        assert_eq!(err.field, "cyclicBlockSize");
        assert!(err.to_string().contains("numerical envelope"), "{err}");
        sc.cyclic_block_size = Some(15);
        assert_eq!(sc.cyclic_blocks().unwrap(), vec![0..15, 15..30, 30..45]);
    }
}
