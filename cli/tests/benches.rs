//! The benchmarks still run and print sane figures (speed itself is never asserted here: these
//! machines are noisy, and the figures belong in docs/benchmarks.md, measured on release builds).

use std::process::Command;

fn draco(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_draco")).args(args).output().expect("draco starts");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "draco {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The numbers in the row of `model`, in order.
fn row(stdout: &str, model: &str) -> Vec<f64> {
    let line =
        stdout.lines().find(|l| l.starts_with(model)).unwrap_or_else(|| panic!("no {model:?} row in:\n{stdout}"));
    line[model.len()..].split_whitespace().filter_map(|w| w.parse().ok()).collect()
}

#[test]
fn ingest_bench_compares_the_ps_with_tcp_in_the_same_run() {
    let stdout = draco(&["bench", "ingest", "--steps", "1", "--sizes", "800,100k"]);
    for model in ["d ~ 800", "d ~ 100k"] {
        // params, PS GB/s, TCP GB/s, ratio, sink GB/s, ratio, then the step split.
        let figures = row(&stdout, model);
        assert_eq!(figures.len(), 11, "{model}: {figures:?}");
        let (ps, tcp, ratio) = (figures[1], figures[2], figures[3]);
        assert!(ps > 0.0 && tcp > 0.0 && ratio > 0.0 && ratio.is_finite(), "{model}: {figures:?}");
        // Printed with two decimals: the ratio must fit PS / TCP within that rounding.
        let (low, high) = ((ps - 0.005).max(0.0) / (tcp + 0.005), (ps + 0.005) / (tcp - 0.005).max(1e-9));
        assert!(ratio >= low - 0.005 && ratio <= high + 0.005, "{model}: ratio is PS / TCP: {figures:?}");
    }
    assert!(!stdout.contains("d ~ 5M"), "only the sizes asked for:\n{stdout}");
}

#[test]
fn ingest_bench_refuses_bad_arguments() {
    for args in [["--steps", "0"], ["--workers", "0"], ["--sizes", "7"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_draco")).args(["bench", "ingest"]).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(args[0]), "{args:?}: the error names the option");
    }
}

#[test]
fn decode_bench_times_every_decoder_against_memcpy() {
    let stdout = draco(&["bench", "decode", "--workers", "6", "--redundancy", "3", "--dim", "20000", "--repeats", "1"]);
    assert!(stdout.contains("repetition") && stdout.contains("cyclic") && stdout.contains("median"), "{stdout}");
}
