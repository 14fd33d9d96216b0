//! Runs anomaly detectors over the Numenta Anomaly Benchmark copy in `../shared/traces/nab` and scores them with
//! `domain::anomaly::nab` (NAB's rules), beside NAB's published scoreboard.
//!
//! ```text
//! cargo run --release -p smart-autoscaler-domain --example nab -- [--nab DIR] [--only NAME,...]
//!     [--set field=value ...] [--published NAB_CHECKOUT]
//! ```
//! `--set` overrides a `LearnedConfig` field for an experiment (the committed defaults are what is reported).
//! `--published` re-scores NAB's own published result files (`results/<detector>/...` of a NAB checkout) with
//! this scorer, over all their files and over the files present here, which validates the scorer and gives a
//! like-for-like board for this subset.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smart_autoscaler_domain::anomaly::learned::{LearnedConfig, LearnedDetector};
use smart_autoscaler_domain::anomaly::nab::{
    LabelledSeries, PROFILES, ProfileScore, WindowedGaussian, round_12, score_corpus,
};

/// NAB's published scoreboard (README at ea702d7; standard, low FP, low FN).
const BOARD: [(&str, [f64; 3]); 8] = [
    ("ARTime", [74.9, 65.1, 80.4]),
    ("Numenta HTM", [70.5, 62.6, 75.2]),
    ("CAD OSE", [69.9, 67.0, 73.2]),
    ("earthgecko Skyline", [58.2, 46.2, 63.9]),
    ("Random Cut Forest", [51.7, 38.4, 59.7]),
    ("Twitter ADVec", [47.1, 33.6, 53.5]),
    ("windowed Gaussian", [39.6, 20.9, 47.4]),
    ("Random", [11.0, 1.2, 19.5]),
];

/// One data file with its labels.
struct File {
    series: LabelledSeries,
    at: Vec<i64>,
    values: Vec<f64>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut nab = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/traces/nab"
    ));
    let mut only: Option<Vec<String>> = None;
    let mut published: Option<PathBuf> = None;
    let mut per_file: Option<f64> = None;
    let mut config = LearnedConfig::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| die(&format!("{a} needs a value")))
                .clone()
        };
        match a.as_str() {
            "--nab" => nab = PathBuf::from(value()),
            "--only" => only = Some(value().split(',').map(str::to_owned).collect()),
            "--published" => published = Some(PathBuf::from(value())),
            "--set" => set(&mut config, &value()),
            "--per-file" => per_file = Some(value().parse().unwrap_or(f64::NAN)),
            other => die(&format!("unknown argument {other}")),
        }
    }
    let nab = nab.canonicalize().unwrap_or(nab);
    let files = load(&nab);
    let rows: usize = files.iter().map(|f| f.series.rows).sum();
    let windows: usize = files.iter().map(|f| f.series.windows.len()).sum();
    println!(
        "NAB copy {}: {} files, {rows} rows, {windows} windows",
        nab.display(),
        files.len()
    );

    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|n| n == name));
    let mut table: Vec<(String, [ProfileScore; 3])> = Vec::new();
    if wanted("learned") {
        // The machine is shared: time five passes and keep the fastest.
        let mut best_ns = f64::INFINITY;
        let mut scores: Vec<Vec<f64>> = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            scores = files
                .iter()
                .map(|f| {
                    let mut d = LearnedDetector::new(&config);
                    f.at.iter()
                        .zip(&f.values)
                        .map(|(&t, &v)| d.update(t, v))
                        .collect()
                })
                .collect();
            best_ns = best_ns.min(start.elapsed().as_nanos() as f64 / rows as f64);
        }
        println!(
            "learned detector: {best_ns:.0} ns/point (release build, fastest of 5 passes over every point, \
             including storing the score), state {} bytes per detector (size_of, no heap)",
            std::mem::size_of::<LearnedDetector>()
        );
        let scored = score_all(&files, &scores);
        if let Some(at) = per_file {
            // NaN (a non-number): at the standard profile's chosen threshold.
            print_per_file(
                &files,
                &scores,
                if at.is_nan() { scored[0].threshold } else { at },
            );
        }
        table.push(("learned (ours)".into(), scored));
    }
    if wanted("gaussian") {
        let start = Instant::now();
        let scores: Vec<Vec<f64>> = files
            .iter()
            .map(|f| {
                let mut g = WindowedGaussian::new();
                // NAB scores the 12-digit values its Python 2 runner wrote to the result files.
                f.values.iter().map(|&v| round_12(g.update(v))).collect()
            })
            .collect();
        let ns = start.elapsed().as_nanos() as f64 / rows as f64;
        println!("windowed Gaussian (NAB's, reproduced): {ns:.0} ns/point");
        table.push((
            "windowed Gaussian (ours)".into(),
            score_all(&files, &scores),
        ));
    }
    if wanted("random") {
        let mut rng = StdRng::seed_from_u64(42);
        let scores: Vec<Vec<f64>> = files
            .iter()
            .map(|f| (0..f.series.rows).map(|_| rng.random::<f64>()).collect())
            .collect();
        table.push(("random".into(), score_all(&files, &scores)));
    }
    if wanted("null") {
        let scores: Vec<Vec<f64>> = files.iter().map(|f| vec![0.5; f.series.rows]).collect();
        table.push(("null".into(), score_all(&files, &scores)));
    }
    if wanted("perfect") {
        // A detection on the first scored row of every window.
        let scores: Vec<Vec<f64>> = files
            .iter()
            .map(|f| {
                let mut s = vec![0.0; f.series.rows];
                let probation = f.series.probation_rows();
                for &(start, end) in &f.series.windows {
                    if end >= probation {
                        s[start.max(probation)] = 1.0;
                    }
                }
                s
            })
            .collect();
        table.push(("perfect".into(), score_all(&files, &scores)));
    }

    println!();
    println!(
        "| detector | standard | reward_low_FP_rate | reward_low_FN_rate | threshold (std) | windows found (std) | FP rows (std) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, s) in &table {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.6} | {}/{} | {} |",
            s[0].normalised,
            s[1].normalised,
            s[2].normalised,
            s[0].threshold,
            s[0].found,
            s[0].windows,
            s[0].false_positives
        );
    }
    for (name, s) in BOARD {
        println!(
            "| {name} (NAB board, all 58 files) | {:.1} | {:.1} | {:.1} | | | |",
            s[0], s[1], s[2]
        );
    }

    if let Some(checkout) = published {
        rescore_published(&checkout, &files);
    }
}

/// Per file, at the given threshold: windows found (with the first detection's position in the window, 0 at
/// its start and 1 at its end) and detections outside windows.
fn print_per_file(files: &[File], scores: &[Vec<f64>], threshold: f64) {
    println!("per file at threshold {threshold}:");
    for (f, s) in files.iter().zip(scores) {
        let probation = f.series.probation_rows();
        let inside = |i: usize| f.series.windows.iter().any(|&(a, b)| a <= i && i <= b);
        let fp = (probation..f.series.rows)
            .filter(|&i| s[i] >= threshold && !inside(i))
            .count();
        let found: Vec<String> = f
            .series
            .windows
            .iter()
            .map(
                |&(a, b)| match (a.max(probation)..=b).find(|&i| s[i] >= threshold) {
                    Some(i) => format!("{:.2}", (i - a) as f64 / (b - a) as f64),
                    None if b < probation => "prob".into(),
                    None => "miss".into(),
                },
            )
            .collect();
        println!(
            "  {:<60} fp {fp:>3}  windows [{}]",
            f.series.name,
            found.join(" ")
        );
    }
}

fn die(message: &str) -> ! {
    eprintln!("nab: {message}");
    std::process::exit(2)
}

fn set(config: &mut LearnedConfig, assignment: &str) {
    let (field, value) = assignment
        .split_once('=')
        .unwrap_or_else(|| die("--set wants field=value"));
    let v: f64 = value
        .parse()
        .unwrap_or_else(|_| die(&format!("--set {field}: not a number")));
    if !config.set(field, v) {
        die(&format!("--set: no field {field}"));
    }
}

fn score_all(files: &[File], scores: &[Vec<f64>]) -> [ProfileScore; 3] {
    let corpus: Vec<(&LabelledSeries, &[f64])> = files
        .iter()
        .zip(scores)
        .map(|(f, s)| (&f.series, s.as_slice()))
        .collect();
    PROFILES.map(|p| score_corpus(&corpus, &p).unwrap_or_else(|e| die(&e.to_string())))
}

/// Reads `labels/combined_windows.json` and every data file it names that is present.
fn load(nab: &Path) -> Vec<File> {
    let labels_path = nab.join("labels/combined_windows.json");
    let text = fs::read_to_string(&labels_path)
        .unwrap_or_else(|e| die(&format!("{}: {e}", labels_path.display())));
    let labels: BTreeMap<String, Vec<[String; 2]>> = serde_json::from_str(&text)
        .unwrap_or_else(|e| die(&format!("{}: {e}", labels_path.display())));
    let mut files = Vec::new();
    for (name, windows) in labels {
        let path = nab.join("data").join(&name);
        let Ok(csv) = fs::read_to_string(&path) else {
            continue; // SOURCE.md: keys whose CSV is left out of this copy are skipped
        };
        let (stamps, values) = parse_csv(&csv, "value");
        files.push(File {
            series: series(&name, &stamps, &windows),
            at: stamps.iter().map(|s| unix_millis(s)).collect(),
            values,
        });
    }
    files
}

/// Turns label windows (timestamps) into row ranges: NAB requires each bound to be a row's exact timestamp.
fn series(name: &str, stamps: &[String], windows: &[[String; 2]]) -> LabelledSeries {
    let row = |t: &str| {
        let t = t.split('.').next().unwrap_or(t);
        stamps
            .iter()
            .position(|s| s == t)
            .unwrap_or_else(|| die(&format!("{name}: window bound {t} is not a row")))
    };
    LabelledSeries {
        name: name.to_owned(),
        rows: stamps.len(),
        windows: windows.iter().map(|[a, b]| (row(a), row(b))).collect(),
    }
}

/// (timestamps, column) of a NAB CSV; the column is found by its header name.
fn parse_csv(text: &str, column: &str) -> (Vec<String>, Vec<f64>) {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = header
        .iter()
        .position(|h| h.trim() == column)
        .unwrap_or_else(|| die(&format!("no column {column} in {header:?}")));
    let mut stamps = Vec::new();
    let mut values = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        stamps.push(fields[0].trim().to_owned());
        values.push(
            fields
                .get(col)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| die(&format!("bad row {line}"))),
        );
    }
    (stamps, values)
}

/// `YYYY-MM-DD HH:MM:SS` (no zone, read as UTC) to Unix milliseconds.
fn unix_millis(s: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| -> i64 {
        s.get(r)
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| die(&format!("bad timestamp {s}")))
    };
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + n(11..13)) * 60 + n(14..16)) * 60_000 + n(17..19) * 1000
}

/// Re-scores NAB's published result files with this scorer: over every file they hold (to compare with NAB's
/// `final_results.json`) and over the files of this copy (a like-for-like board).
fn rescore_published(checkout: &Path, here: &[File]) {
    let labels_path = checkout.join("labels/combined_windows.json");
    let text = fs::read_to_string(&labels_path)
        .unwrap_or_else(|e| die(&format!("{}: {e}", labels_path.display())));
    let labels: BTreeMap<String, Vec<[String; 2]>> =
        serde_json::from_str(&text).unwrap_or_else(|e| die(&e.to_string()));
    let final_results: serde_json::Value =
        fs::read_to_string(checkout.join("results/final_results.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null);
    let here_names: Vec<&str> = here.iter().map(|f| f.series.name.as_str()).collect();
    println!();
    println!(
        "NAB's published result files re-scored with this scorer (all files | the {} files here)",
        here.len()
    );
    println!(
        "| detector | NAB final_results.json std / lowFP / lowFN | ours, all files | ours, files here |"
    );
    println!("|---|---|---|---|");
    let detectors = [
        "ARTime",
        "numenta",
        "contextOSE",
        "earthgeckoSkyline",
        "randomCutForest",
        "twitterADVec",
        "windowedGaussian",
        "random",
        "null",
    ];
    for det in detectors {
        let mut all: Vec<(LabelledSeries, Vec<f64>)> = Vec::new();
        for (name, windows) in &labels {
            let (dir, file) = name.split_once('/').unwrap_or_else(|| die(name));
            let path = checkout
                .join("results")
                .join(det)
                .join(dir)
                .join(format!("{det}_{file}"));
            let Ok(csv) = fs::read_to_string(&path) else {
                die(&format!("{} is missing", path.display()));
            };
            let (stamps, scores) = parse_csv(&csv, "anomaly_score");
            all.push((series(name, &stamps, windows), scores));
        }
        if det == "windowedGaussian" {
            // Row by row: our reproduction against NAB's published scores, on the files here.
            let (mut same, mut rows, mut worst) = (0usize, 0usize, 0.0f64);
            for f in here {
                let Some((_, published)) = all.iter().find(|(s, _)| s.name == f.series.name) else {
                    continue;
                };
                let mut g = WindowedGaussian::new();
                for (v, p) in f.values.iter().zip(published) {
                    let ours = round_12(g.update(*v));
                    rows += 1;
                    same += usize::from(ours == *p);
                    worst = worst.max((ours - p).abs());
                }
            }
            println!(
                "windowed Gaussian, ours vs NAB's published rows here: {same} of {rows} identical (12 digits), \
                 largest difference {worst:e}"
            );
        }
        let corpus: Vec<(&LabelledSeries, &[f64])> =
            all.iter().map(|(s, v)| (s, v.as_slice())).collect();
        let subset: Vec<(&LabelledSeries, &[f64])> = corpus
            .iter()
            .filter(|(s, _)| here_names.contains(&s.name.as_str()))
            .copied()
            .collect();
        let ours_all =
            PROFILES.map(|p| score_corpus(&corpus, &p).unwrap_or_else(|e| die(&e.to_string())));
        let ours_here =
            PROFILES.map(|p| score_corpus(&subset, &p).unwrap_or_else(|e| die(&e.to_string())));
        let theirs = PROFILES.map(|p| final_results[det][p.name].as_f64().unwrap_or(f64::NAN));
        println!(
            "| {det} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} |",
            theirs[0],
            theirs[1],
            theirs[2],
            ours_all[0].normalised,
            ours_all[1].normalised,
            ours_all[2].normalised,
            ours_here[0].normalised,
            ours_here[1].normalised,
            ours_here[2].normalised
        );
    }
}
