//! Secrets from the operating system's random source: worker tokens (local runner, operator)
//! and job incarnation ids (PS). The decoder's secret directions draw from the same source.

/// `bytes` bytes from the OS random source, in hex.
pub fn random_hex(bytes: usize) -> String {
    use rand_core::TryRngCore;
    let mut buf = vec![0u8; bytes];
    rand_core::OsRng.try_fill_bytes(&mut buf).expect("the operating system's random source failed");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
