//! Datasets read from files: the MNIST family in IDX format (`.gz` or raw) and CIFAR-10 in its
//! binary format. Headers are checked against the bytes present before anything is allocated
//! for the samples, and every error names the file and what was wrong.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Images as f32 in [0, 1], channel-major (`[n, c, h, w]` flattened), with their labels.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub images: Vec<f32>,
    pub labels: Vec<u8>,
    /// [channels, height, width]
    pub shape: [usize; 3],
    pub classes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{0}")]
    Missing(String),
}

/// Which split to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// Largest file we read into memory (CIFAR-10's training set is 150 MB).
const MAX_FILE_BYTES: u64 = 1 << 30;

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.sample_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// The MNIST family in `dir`: `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.
    pub fn idx(dir: &Path, split: Split) -> Result<Dataset, DatasetError> {
        let prefix = match split {
            Split::Train => "train",
            Split::Test => "t10k",
        };
        let images_path = find_file(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels_path = find_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let (image_dims, pixels) = read_idx(&images_path, 0x0803, 3)?;
        let (label_dims, labels) = read_idx(&labels_path, 0x0801, 1)?;
        if image_dims[0] != label_dims[0] {
            return Err(DatasetError::Format {
                path: labels_path,
                message: format!("{} labels for {} images in {}", label_dims[0], image_dims[0], images_path.display()),
            });
        }
        if let Some(bad) = labels.iter().find(|&&l| l > 9) {
            return Err(DatasetError::Format { path: labels_path, message: format!("label {bad} is outside 0..=9") });
        }
        Ok(Dataset {
            images: pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
            labels,
            shape: [1, image_dims[1], image_dims[2]],
            classes: 10,
        })
    }

    /// CIFAR-10 binary version in `dir`: `data_batch_{1..5}.bin` / `test_batch.bin`, records of
    /// 1 label byte + 3072 pixel bytes.
    pub fn cifar10(dir: &Path, split: Split) -> Result<Dataset, DatasetError> {
        const RECORD: usize = 1 + 3 * 32 * 32;
        let names: Vec<String> = match split {
            Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            Split::Test => vec!["test_batch.bin".to_string()],
        };
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for name in names {
            let path = find_file(dir, &name)?;
            let bytes = read_file(&path)?;
            if bytes.is_empty() || bytes.len() % RECORD != 0 {
                return Err(DatasetError::Format {
                    path,
                    message: format!("{} bytes is not a whole number of {RECORD}-byte CIFAR-10 records", bytes.len()),
                });
            }
            for record in bytes.chunks_exact(RECORD) {
                if record[0] > 9 {
                    return Err(DatasetError::Format {
                        path,
                        message: format!("label {} is outside 0..=9", record[0]),
                    });
                }
                labels.push(record[0]);
                images.extend(record[1..].iter().map(|&p| f32::from(p) / 255.0));
            }
        }
        Ok(Dataset { images, labels, shape: [3, 32, 32], classes: 10 })
    }

    /// A small learnable dataset generated from a seed: each class is a fixed random prototype
    /// plus noise. For tests and smoke runs without files.
    pub fn synthetic(samples: usize, shape: [usize; 3], classes: usize, seed: u64) -> Dataset {
        let dim: usize = shape.iter().product();
        let mut state = seed ^ 0x5DEE_CE66_D1CE_4E5B;
        let mut uniform = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32) / (1u64 << 24) as f32
        };
        let prototypes: Vec<f32> = (0..classes * dim).map(|_| uniform()).collect();
        let mut images = Vec::with_capacity(samples * dim);
        let mut labels = Vec::with_capacity(samples);
        for i in 0..samples {
            let class = i % classes.max(1);
            labels.push(class as u8);
            images.extend(
                prototypes[class * dim..(class + 1) * dim].iter().map(|p| (p * 0.7 + uniform() * 0.3).clamp(0.0, 1.0)),
            );
        }
        Dataset { images, labels, shape, classes }
    }
}

/// `name` or `name.gz` inside `dir`.
fn find_file(dir: &Path, name: &str) -> Result<PathBuf, DatasetError> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    [plain.clone(), gz.clone()].into_iter().find(|p| p.is_file()).ok_or_else(|| {
        DatasetError::Missing(format!(
            "spec.dataset.path: {} has neither {} nor {} (on Debian: apt-get install dataset-fashion-mnist \
             puts Fashion-MNIST in /usr/share/datasets/fashion-mnist)",
            dir.display(),
            plain.file_name().unwrap_or_default().to_string_lossy(),
            gz.file_name().unwrap_or_default().to_string_lossy()
        ))
    })
}

/// Reads a file, transparently gunzipping `.gz`, refusing anything over `MAX_FILE_BYTES`.
fn read_file(path: &Path) -> Result<Vec<u8>, DatasetError> {
    let io = |source| DatasetError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    let gz = path.extension().is_some_and(|e| e == "gz");
    let mut reader: Box<dyn Read> = if gz { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) };
    reader.by_ref().take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(DatasetError::Format {
            path: path.to_path_buf(),
            message: format!("larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    Ok(bytes)
}

/// An IDX file of unsigned bytes: magic, big-endian dimensions, then the data.
fn read_idx(path: &Path, magic: u32, rank: usize) -> Result<(Vec<usize>, Vec<u8>), DatasetError> {
    let bytes = read_file(path)?;
    let format = |message: String| DatasetError::Format { path: path.to_path_buf(), message };
    let header_len = 4 + 4 * rank;
    if bytes.len() < header_len {
        return Err(format(format!("{} bytes is shorter than the {header_len}-byte IDX header", bytes.len())));
    }
    let word = |i: usize| u32::from_be_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]]);
    if word(0) != magic {
        return Err(format(format!("IDX magic {:#010x}, expected {magic:#010x}", word(0))));
    }
    let dims: Vec<usize> = (1..=rank).map(|i| word(i) as usize).collect();
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let body = bytes.len() - header_len;
    if expected != Some(body) {
        return Err(format(format!("header dimensions {dims:?} need {expected:?} data bytes, file has {body}")));
    }
    Ok((dims, bytes[header_len..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_idx(dir: &Path, name: &str, magic: u32, dims: &[u32], data: &[u8], gzip: bool) {
        let mut bytes = magic.to_be_bytes().to_vec();
        dims.iter().for_each(|d| bytes.extend(d.to_be_bytes()));
        bytes.extend(data);
        if gzip {
            let file = File::create(dir.join(format!("{name}.gz"))).unwrap();
            let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            enc.write_all(&bytes).unwrap();
            enc.finish().unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("draco-dataset-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_gzipped_and_raw_idx() {
        for gzip in [true, false] {
            let dir = temp_dir(&format!("ok-{gzip}"));
            write_idx(
                &dir,
                "t10k-images-idx3-ubyte",
                0x0803,
                &[2, 2, 3],
                &[0, 255, 51, 0, 0, 0, 1, 2, 3, 4, 5, 6],
                gzip,
            );
            write_idx(&dir, "t10k-labels-idx1-ubyte", 0x0801, &[2], &[7, 3], gzip);
            let ds = Dataset::idx(&dir, Split::Test).unwrap();
            assert_eq!(ds.len(), 2);
            assert_eq!(ds.shape, [1, 2, 3]);
            assert_eq!(ds.labels, vec![7, 3]);
            assert_eq!(ds.image(0)[1], 1.0);
            assert!((ds.image(0)[2] - 0.2).abs() < 1e-6);
        }
    }

    #[test]
    fn rejects_bad_files_with_the_path_and_reason() {
        let dir = temp_dir("bad");
        write_idx(&dir, "train-images-idx3-ubyte", 0x0803, &[1000, 28, 28], &[0; 10], false);
        write_idx(&dir, "train-labels-idx1-ubyte", 0x0801, &[1], &[1], false);
        let err = Dataset::idx(&dir, Split::Train).unwrap_err().to_string();
        assert!(err.contains("train-images-idx3-ubyte") && err.contains("[1000, 28, 28]"), "{err}");
        write_idx(&dir, "train-images-idx3-ubyte", 0x0801, &[1, 1, 1], &[0], false);
        assert!(Dataset::idx(&dir, Split::Train).unwrap_err().to_string().contains("magic"));
        let err = Dataset::idx(&temp_dir("empty"), Split::Train).unwrap_err().to_string();
        assert!(err.contains("spec.dataset.path") && err.contains("dataset-fashion-mnist"), "{err}");
    }

    #[test]
    fn reads_cifar10_records() {
        let dir = temp_dir("cifar");
        let mut record = vec![4u8];
        record.extend((0..3072).map(|i| (i % 256) as u8));
        std::fs::write(dir.join("test_batch.bin"), [record.clone(), record].concat()).unwrap();
        let ds = Dataset::cifar10(&dir, Split::Test).unwrap();
        assert_eq!((ds.len(), ds.shape, ds.labels[1]), (2, [3, 32, 32], 4));
        std::fs::write(dir.join("test_batch.bin"), [1u8; 100]).unwrap();
        assert!(Dataset::cifar10(&dir, Split::Test).unwrap_err().to_string().contains("CIFAR-10 records"));
    }
}
