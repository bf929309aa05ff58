//! docs/metrics.md against the code: every metric the PS and the workers declare is documented
//! with its type and labels, nothing documented is missing from the code, and each documented
//! label value set is exactly what the code exports (read from a real rendering).

use std::collections::{BTreeMap, BTreeSet};

use draco_metrics::MetricSet;

const WORKERS: usize = 6;

/// One documented row: name, type, and for each label its documented values (None: "rank 0..P-1").
#[derive(Debug)]
struct Row {
    name: String,
    kind: String,
    labels: Vec<(String, Option<BTreeSet<String>>)>,
}

fn docs() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md")).expect("docs/metrics.md")
}

/// The rows of the first table under `## {section}`.
fn section(doc: &str, section: &str) -> Vec<Row> {
    let start = doc.find(&format!("\n## {section}\n")).unwrap_or_else(|| panic!("docs/metrics.md: no ## {section}"));
    let body = &doc[start + 4..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    body.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 5, "docs/metrics.md: a metric row has 5 cells: {line}");
            Row { name: cells[0].trim_matches('`').to_string(), kind: cells[1].to_string(), labels: labels(cells[3]) }
        })
        .collect()
}

/// "`worker` (rank 0..P-1), `reason` (`a`, `b`)" -> [(worker, None), (reason, {a, b})]
fn labels(cell: &str) -> Vec<(String, Option<BTreeSet<String>>)> {
    let mut out = Vec::new();
    let mut rest = cell.trim();
    while let Some(open) = rest.find('`') {
        let close = open + 1 + rest[open + 1..].find('`').expect("closing backtick");
        let name = rest[open + 1..close].to_string();
        rest = rest[close + 1..].trim_start();
        let mut values = None;
        if let Some(inner) = rest.strip_prefix('(') {
            let end = inner.find(')').expect("closing parenthesis");
            let set: BTreeSet<String> = inner[..end]
                .split(',')
                .filter_map(|v| v.trim().strip_prefix('`')?.strip_suffix('`'))
                .map(String::from)
                .collect();
            if !set.is_empty() {
                values = Some(set);
            } else {
                assert!(inner[..end].contains("0..P-1"), "label {name}: list `values` or say rank 0..P-1: {cell}");
            }
            rest = inner[end + 1..].trim_start_matches([',', ' ']);
        }
        out.push((name, values));
    }
    out
}

/// metric -> label -> values seen in the text exposition (histogram suffixes folded, `le` dropped).
fn exported_values(set: &MetricSet) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let histograms: BTreeSet<&str> =
        set.catalogue().iter().filter(|d| d.kind == draco_metrics::Kind::Histogram).map(|d| d.name.as_str()).collect();
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for line in set.render().lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).expect("sample line");
        let mut name = &line[..name_end];
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix)
                && histograms.contains(base)
            {
                name = base;
            }
        }
        let entry = out.entry(name.to_string()).or_default();
        if line[name_end..].starts_with('{') {
            let labels = &line[name_end + 1..line.find('}').expect("closing brace")];
            for pair in labels.split(',') {
                let (k, v) = pair.split_once('=').expect("label pair");
                if k != "le" {
                    entry.entry(k.to_string()).or_default().insert(v.trim_matches('"').to_string());
                }
            }
        }
    }
    out
}

fn check(section_name: &str, set: &MetricSet) {
    let doc = docs();
    let rows = section(&doc, section_name);
    let mut problems = Vec::new();
    let documented: BTreeSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    for d in set.catalogue() {
        if !documented.contains(d.name.as_str()) {
            problems.push(format!(
                "{} ({}) is exported but not in docs/metrics.md ## {section_name}",
                d.name,
                d.kind.as_str()
            ));
        }
    }
    let exported = exported_values(set);
    let ranks: BTreeSet<String> = (0..WORKERS).map(|w| w.to_string()).collect();
    for row in &rows {
        let Some(d) = set.catalogue().iter().find(|d| d.name == row.name) else {
            problems
                .push(format!("{} is documented under ## {section_name} but the code does not export it", row.name));
            continue;
        };
        if d.kind.as_str() != row.kind {
            problems.push(format!("{}: documented as a {}, exported as a {}", row.name, row.kind, d.kind.as_str()));
        }
        let doc_labels: Vec<&str> = row.labels.iter().map(|(l, _)| l.as_str()).collect();
        if doc_labels != d.labels.iter().map(String::as_str).collect::<Vec<_>>() {
            problems.push(format!("{}: documented labels {doc_labels:?}, exported {:?}", row.name, d.labels));
        }
        for (label, values) in &row.labels {
            let seen = exported.get(&row.name).and_then(|m| m.get(label)).cloned().unwrap_or_default();
            let want = values.clone().unwrap_or_else(|| ranks.clone());
            if seen != want {
                problems.push(format!("{} {{{label}}}: documented values {want:?}, exported {seen:?}", row.name));
            }
        }
    }
    assert!(problems.is_empty(), "docs/metrics.md and the code disagree:\n  {}", problems.join("\n  "));
}

#[test]
fn parameter_server_metrics_are_documented_exactly() {
    let m = draco_ps::metrics::Metrics::new(WORKERS, 3, 100);
    check("Parameter server", &m.set);
}

#[test]
fn worker_metrics_are_documented_exactly() {
    let m = draco_worker::metrics::WorkerMetrics::new();
    check("Worker", &m.set);
}

#[test]
fn operator_metrics_are_documented_exactly() {
    let m = draco_operator::metrics::OperatorMetrics::new();
    check("Operator", &m.set);
}

#[test]
fn the_parser_reads_value_sets_and_ranks() {
    let l = labels("`worker` (rank 0..P-1), `reason` (`a`, `b`)");
    assert_eq!(l[0], ("worker".to_string(), None));
    assert_eq!(l[1].1.as_ref().unwrap().iter().collect::<Vec<_>>(), ["a", "b"]);
    assert!(labels("").is_empty());
}
