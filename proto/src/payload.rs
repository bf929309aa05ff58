//! How f32 vectors travel: little-endian bytes, split into chunks of at most `CHUNK_VALUES`
//! values. Both directions (parameters out, coded gradients in) use these, so there is one
//! encoding to get right and one place to make fast.

use bytes::Bytes;

use crate::CHUNK_VALUES;
use crate::v1::GradientChunk;

/// `values` as little-endian bytes. Written through fixed 4-byte slots so the compiler turns
/// it into a straight copy (a byte-by-byte `extend` ran at a fraction of memory speed).
pub fn f32s_to_bytes(values: &[f32]) -> Bytes {
    let mut out = vec![0u8; values.len() * 4];
    for (slot, v) in out.chunks_exact_mut(4).zip(values) {
        slot.copy_from_slice(&v.to_le_bytes());
    }
    Bytes::from(out)
}

/// Appends the little-endian f32s in `bytes` to `out`. The caller has checked that
/// `bytes.len()` is a multiple of 4; a trailing partial value would be ignored.
pub fn extend_f32s(out: &mut Vec<f32>, bytes: &[u8]) {
    let start = out.len();
    out.resize(start + bytes.len() / 4, 0.0);
    for (v, b) in out[start..].iter_mut().zip(bytes.chunks_exact(4)) {
        *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// One step's coded gradient as the chunks of a `PushGradient` stream. The loss rides on
/// the first chunk only.
pub fn gradient_chunks(incarnation: &str, step: u64, values: &[f32], loss: f32) -> Vec<GradientChunk> {
    let total = values.len() as u64;
    values
        .chunks(CHUNK_VALUES)
        .enumerate()
        .map(|(i, c)| GradientChunk {
            incarnation: incarnation.to_string(),
            step,
            offset: (i * CHUNK_VALUES) as u64,
            total,
            data: f32s_to_bytes(c),
            loss: if i == 0 { loss } else { 0.0 },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_every_bit_pattern_class() {
        let values = [0.0f32, -0.0, 1.5, -3.25e-39, f32::MAX, f32::MIN_POSITIVE, f32::INFINITY, f32::NAN];
        let bytes = f32s_to_bytes(&values);
        assert_eq!(&bytes[4..8], &(-0.0f32).to_le_bytes());
        let mut back = vec![7.0];
        extend_f32s(&mut back, &bytes);
        let bits: Vec<u32> = back[1..].iter().map(|v| v.to_bits()).collect();
        assert_eq!(back[0], 7.0);
        assert_eq!(bits, values.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }

    #[test]
    fn chunks_are_contiguous_and_bounded() {
        let values: Vec<f32> = (0..(2 * CHUNK_VALUES + 3)).map(|i| i as f32).collect();
        let chunks = gradient_chunks("inc", 9, &values, 0.25);
        assert_eq!(chunks.len(), 3);
        let mut at = 0u64;
        let mut back = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!((c.offset, c.total, c.step, c.incarnation.as_str()), (at, values.len() as u64, 9, "inc"));
            assert_eq!(c.loss, if i == 0 { 0.25 } else { 0.0 });
            assert!(c.data.len() <= CHUNK_VALUES * 4);
            at += c.data.len() as u64 / 4;
            extend_f32s(&mut back, &c.data);
        }
        assert_eq!(back, values);
        assert!(gradient_chunks("inc", 0, &[], 1.0).is_empty());
    }
}
