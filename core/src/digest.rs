//! A fast, non-cryptographic digest of f32 vectors, used only to bucket repetition votes.
//! Equality is always confirmed bytewise afterwards, so a collision can cost time, never
//! correctness; an adversary crafting collisions gains nothing.

const MUL: u64 = 0x9E37_79B9_7F4A_7C15;

/// Digest of the canonical bit patterns of `v` (so -0.0 and +0.0 differ, and NaN payloads
/// are just bits). Four independent lanes keep the multiplier pipeline busy.
pub fn digest_f32(v: &[f32]) -> u64 {
    let mut lanes = [0x243F_6A88_85A3_08D3u64, 0x1319_8A2E_0370_7344, 0xA409_3822_299F_31D0, 0x082E_FA98_EC4E_6C89];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (lane, pair) in lanes.iter_mut().zip(c.chunks_exact(2)) {
            let word = u64::from(pair[0].to_bits()) | (u64::from(pair[1].to_bits()) << 32);
            *lane = (*lane ^ word).wrapping_mul(MUL).rotate_left(29);
        }
    }
    let mut h = (v.len() as u64).wrapping_mul(MUL);
    for x in chunks.remainder() {
        h = (h ^ u64::from(x.to_bits())).wrapping_mul(MUL).rotate_left(29);
    }
    for lane in lanes {
        h = (h ^ lane).wrapping_mul(MUL).rotate_left(31);
    }
    h ^ (h >> 32)
}

/// FNV-1a (64-bit) of a byte stream: a stable fingerprint for logs and status (parameter
/// vectors, model layouts). Not collision-resistant against an adversary.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Bit-for-bit equality (unlike `==`, distinguishes -0.0 from +0.0 and treats equal NaNs
/// as equal).
pub fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.chunks(4096)
            .zip(b.chunks(4096))
            .all(|(x, y)| x.iter().zip(y).fold(true, |eq, (p, q)| eq & (p.to_bits() == q.to_bits())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_separates_signed_zeros_and_one_ulp() {
        let a = vec![0.0f32; 17];
        let mut b = a.clone();
        b[16] = -0.0;
        assert_ne!(digest_f32(&a), digest_f32(&b));
        assert!(!bits_equal(&a, &b));
        let mut c = a.clone();
        c[3] = f32::from_bits(1);
        assert_ne!(digest_f32(&a), digest_f32(&c));
        assert!(bits_equal(&a, &a.clone()));
    }

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(*b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn digest_depends_on_length_and_position() {
        assert_ne!(digest_f32(&[0.0; 8]), digest_f32(&[0.0; 9]));
        assert_ne!(digest_f32(&[1.0, 2.0]), digest_f32(&[2.0, 1.0]));
        let nan_a = f32::from_bits(0x7FC0_0001);
        assert!(bits_equal(&[nan_a], &[nan_a]));
        assert!(!bits_equal(&[nan_a], &[f32::NAN]));
    }
}
