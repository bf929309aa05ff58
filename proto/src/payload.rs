//! How f32 vectors travel: little-endian bytes, split into chunks of at most `CHUNK_VALUES`
//! values. Both directions (parameters out, coded gradients in) use these, so there is one
//! encoding to get right and one place to make fast. On little-endian machines (all that
//! Draco ships for) every conversion is a plain memory copy or no copy at all.

use std::sync::Arc;

use bytes::Bytes;

const LITTLE_ENDIAN: bool = cfg!(target_endian = "little");

/// `values` as little-endian bytes, copied.
pub fn f32s_to_bytes(values: &[f32]) -> Bytes {
    if LITTLE_ENDIAN {
        return Bytes::copy_from_slice(bytemuck::cast_slice(values));
    }
    let mut out = vec![0u8; values.len() * 4];
    for (slot, v) in out.chunks_exact_mut(4).zip(values) {
        slot.copy_from_slice(&v.to_le_bytes());
    }
    Bytes::from(out)
}

/// `values` as little-endian bytes, without copying where the machine is little-endian: the
/// bytes own the vector.
pub fn into_le_bytes(values: Vec<f32>) -> Bytes {
    le_bytes_of(values, |v| v.as_slice())
}

/// `values` as little-endian bytes sharing the vector (no copy on little-endian machines):
/// every caller slicing them, e.g. each worker fetching the published parameters, shares one
/// vector instead of holding its own copy.
pub fn shared_le_bytes(values: Arc<Vec<f32>>) -> Bytes {
    le_bytes_of(values, |v| v.as_slice())
}

/// Bytes owning `owner`, whose f32s `view` shows.
fn le_bytes_of<T: Send + 'static>(owner: T, view: fn(&T) -> &[f32]) -> Bytes {
    struct LeF32s<T> {
        owner: T,
        view: fn(&T) -> &[f32],
    }
    impl<T> AsRef<[u8]> for LeF32s<T> {
        fn as_ref(&self) -> &[u8] {
            bytemuck::cast_slice((self.view)(&self.owner))
        }
    }
    if LITTLE_ENDIAN { Bytes::from_owner(LeF32s { owner, view }) } else { f32s_to_bytes(view(&owner)) }
}

/// Fills `out` from the little-endian f32s in `bytes` (any alignment). The caller has checked
/// that `bytes` holds exactly `out.len()` values.
pub fn copy_f32s(out: &mut [f32], bytes: &[u8]) {
    assert_eq!(out.len() * 4, bytes.len(), "copy_f32s: {} values from {} bytes", out.len(), bytes.len());
    if LITTLE_ENDIAN {
        bytemuck::cast_slice_mut::<f32, u8>(out).copy_from_slice(bytes);
        return;
    }
    for (v, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// Appends the little-endian f32s in `bytes` to `out`. The caller has checked that
/// `bytes.len()` is a multiple of 4.
pub fn extend_f32s(out: &mut Vec<f32>, bytes: &[u8]) {
    let start = out.len();
    out.resize(start + bytes.len() / 4, 0.0);
    copy_f32s(&mut out[start..], &bytes[..bytes.len() / 4 * 4]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const EDGE_CASES: [f32; 8] = [0.0, -0.0, 1.5, -3.25e-39, f32::MAX, f32::MIN_POSITIVE, f32::INFINITY, f32::NAN];

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn bytes_round_trip_every_bit_pattern_class() {
        let bytes = f32s_to_bytes(&EDGE_CASES);
        assert_eq!(&bytes[4..8], &(-0.0f32).to_le_bytes());
        assert_eq!(&bytes[8..12], &1.5f32.to_le_bytes());
        let mut back = vec![7.0];
        extend_f32s(&mut back, &bytes);
        assert_eq!(back[0], 7.0);
        assert_eq!(bits(&back[1..]), bits(&EDGE_CASES));
        assert_eq!(into_le_bytes(EDGE_CASES.to_vec()), bytes);
        assert_eq!(shared_le_bytes(Arc::new(EDGE_CASES.to_vec())).slice(4..12), bytes.slice(4..12));
    }

    #[test]
    fn copies_from_unaligned_bytes() {
        // Received frames put a payload at any byte offset.
        let mut raw = vec![0xAAu8];
        raw.extend_from_slice(&f32s_to_bytes(&EDGE_CASES));
        let mut out = [0.0f32; 8];
        copy_f32s(&mut out, &raw[1..]);
        assert_eq!(bits(&out), bits(&EDGE_CASES));
    }
}
