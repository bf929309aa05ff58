//! Checkpoints: the step, parameters and optimizer state, written atomically (temporary file
//! + rename) so a PS killed at any moment leaves either the old or the new checkpoint.
//!
//! Format: magic, then little-endian u64 header fields, then f32 vectors.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"DRACOCK1";
const FILE: &str = "checkpoint.bin";

#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Steps completed: the PS resumes by gathering this step.
    pub step: u64,
    pub layout_digest: u64,
    pub params: Vec<f32>,
    pub optimizer_first: Vec<f32>,
    pub optimizer_second: Vec<f32>,
    pub optimizer_updates: u64,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

impl Checkpoint {
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("{FILE}.tmp"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        out.write_all(MAGIC)?;
        for v in [
            self.step,
            self.layout_digest,
            self.optimizer_updates,
            self.params.len() as u64,
            self.optimizer_first.len() as u64,
            self.optimizer_second.len() as u64,
        ] {
            out.write_all(&v.to_le_bytes())?;
        }
        for vector in [&self.params, &self.optimizer_first, &self.optimizer_second] {
            for x in vector.iter() {
                out.write_all(&x.to_le_bytes())?;
            }
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path(dir))
    }

    /// The checkpoint in `dir`, if any. A file that is not a complete checkpoint of a model with
    /// `expected_params` parameters is an error naming the file: never silently ignored.
    pub fn load(dir: &Path, expected_params: usize) -> Result<Option<Checkpoint>, String> {
        let file = path(dir);
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        let bad = |why: String| format!("{}: not a usable checkpoint: {why}", file.display());
        let mut reader = bytes.as_slice();
        let mut magic = [0u8; 8];
        reader.read_exact(&mut magic).map_err(|e| bad(e.to_string()))?;
        if &magic != MAGIC {
            return Err(bad("wrong magic".into()));
        }
        let mut header = [0u64; 6];
        for h in &mut header {
            let mut b = [0u8; 8];
            reader.read_exact(&mut b).map_err(|e| bad(e.to_string()))?;
            *h = u64::from_le_bytes(b);
        }
        let [step, layout_digest, optimizer_updates, n_params, n_first, n_second] = header;
        if n_params != expected_params as u64 || n_first > n_params || n_second > n_params {
            return Err(bad(format!("holds {n_params} parameters, the model has {expected_params}")));
        }
        let needed = (n_params + n_first + n_second) as usize * 4;
        if reader.len() != needed {
            return Err(bad(format!("{} data bytes, expected {needed}", reader.len())));
        }
        let mut take = |n: u64| -> Vec<f32> {
            let (head, rest) = reader.split_at(n as usize * 4);
            reader = rest;
            head.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        };
        let params = take(n_params);
        let optimizer_first = take(n_first);
        let optimizer_second = take(n_second);
        Ok(Some(Checkpoint { step, layout_digest, params, optimizer_first, optimizer_second, optimizer_updates }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let dir = std::env::temp_dir().join(format!("draco-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(Checkpoint::load(&dir, 3).unwrap(), None);
        let ck = Checkpoint {
            step: 7,
            layout_digest: 99,
            params: vec![1.0, -2.0, f32::MIN_POSITIVE],
            optimizer_first: vec![0.5, 0.25, 0.0],
            optimizer_second: vec![],
            optimizer_updates: 7,
        };
        ck.save(&dir).unwrap();
        assert_eq!(Checkpoint::load(&dir, 3).unwrap(), Some(ck.clone()));
        assert!(Checkpoint::load(&dir, 4).unwrap_err().contains("holds 3 parameters"));
        let bytes = std::fs::read(path(&dir)).unwrap();
        std::fs::write(path(&dir), &bytes[..bytes.len() - 2]).unwrap();
        assert!(Checkpoint::load(&dir, 3).unwrap_err().contains("data bytes"));
        std::fs::write(path(&dir), b"garbage!garbage!").unwrap();
        assert!(Checkpoint::load(&dir, 3).unwrap_err().contains("wrong magic"));
    }
}
