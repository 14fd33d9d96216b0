//! Reading a workload trace file for `simulate`: a CSV-like text file with a header row, an optional timestamp
//! column and a value column, as real exports come (comma, semicolon or tab separated; NAB, Azure, Google and
//! spreadsheet exports). Bad rows are never silently used: a row that cannot be read is an error naming the row
//! and what was expected; rows out of time order are sorted (some real exports repeat an hour), rows that can
//! be read but cannot be load (NaN, infinite) or repeat a timestamp are dropped, negative values (noise around
//! zero in some exports) are read as 0, and all of them are counted in [`Trace::cleaned`], which `simulate`
//! reports.

use std::path::{Path, PathBuf};

use crate::domain::backtest::Series;

/// The timestamp formats a trace may use, as error messages list them.
pub const TIME_FORMATS: &str = "`YYYY-MM-DD HH:MM:SS` (UTC), RFC 3339 (e.g. `2024-01-02T03:04:05Z`) or seconds since the epoch";

/// Most points a trace may resample to: a month at one-second steps, far past any real trace.
const MAX_POINTS: i64 = 31 * 86_400;

/// A trace read from a file and resampled onto a regular grid.
#[derive(Debug, Clone)]
pub struct Trace {
    /// The load, one value per step; gaps hold the last value.
    pub series: Series,
    /// Time of the first point, milliseconds (0 when the trace has no timestamps).
    pub start_millis: i64,
    /// Rows read.
    pub rows: usize,
    /// Rows left out or changed, and why.
    pub cleaned: Cleaned,
}

/// Rows of a trace left out or changed, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// Rows left out: NaN or infinite values.
    pub not_finite: usize,
    /// Rows kept with their negative value read as 0 (load cannot be negative).
    pub negative: usize,
    /// Rows left out: their timestamp repeats an earlier row's (the first in the file is kept).
    pub duplicate_time: usize,
    /// Rows whose timestamp is before the previous row's: the rows are sorted by time before use.
    pub out_of_order: usize,
    /// The first such row's line number.
    pub first_out_of_order_line: Option<usize>,
}

impl Cleaned {
    /// Rows left out or changed.
    pub fn total(&self) -> usize {
        self.not_finite + self.negative + self.duplicate_time + self.out_of_order
    }
}

/// Why a trace cannot be used. Row numbers count lines of the file from 1, the header being line 1.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("reading trace {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Something about the file's shape or a row.
    #[error("trace {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the row number where there is one, and how to fix it.
        message: String,
    },
}

/// Parses a timestamp in one of [`TIME_FORMATS`]; returns milliseconds.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim().trim_matches('"');
    if let Ok(seconds) = text.parse::<f64>() {
        return seconds.is_finite().then_some((seconds * 1000.0) as i64);
    }
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Some(ts.as_millisecond());
    }
    let civil = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", text).ok()?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp().as_millisecond())
}

/// The field separator of a header: the one of `,` `;` tab that splits it into the most fields.
fn delimiter(header: &str) -> char {
    [',', ';', '\t']
        .into_iter()
        .max_by_key(|d| header.split(*d).count())
        .unwrap_or(',')
}

/// Reads a trace: a header row, an optional timestamp column (named timestamp, time, date or ts) and the value
/// column picked by name or 0-based index (or the first numeric non-time column). Without a timestamp column,
/// `step_seconds` gives the spacing (and overrides the timestamps when both are there).
pub fn read(
    path: &Path,
    column: Option<&str>,
    step_seconds: Option<f64>,
) -> Result<Trace, TraceError> {
    let text = std::fs::read_to_string(path).map_err(|source| TraceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, column, step_seconds).map_err(|message| TraceError::Invalid {
        path: path.to_path_buf(),
        message,
    })
}

/// [`read`] on the file's text; errors are the message only.
pub fn parse(text: &str, column: Option<&str>, step_seconds: Option<f64>) -> Result<Trace, String> {
    // (line number, line) of every non-blank line.
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header_line) = lines.next().ok_or("the file is empty")?;
    let sep = delimiter(header_line);
    let header: Vec<&str> = header_line
        .split(sep)
        .map(|h| h.trim().trim_matches('"'))
        .collect();
    let rows: Vec<(usize, Vec<&str>)> = lines
        .map(|(n, l)| (n, l.split(sep).map(str::trim).collect()))
        .collect();
    if rows.len() < 2 {
        return Err(format!("{} data rows; at least two are needed", rows.len()));
    }
    let time_col = header.iter().position(|h| {
        matches!(
            h.to_ascii_lowercase().as_str(),
            "timestamp" | "time" | "date" | "ts"
        )
    });
    let number = |v: &str| v.trim_matches('"').parse::<f64>().ok();
    let value_col = match column {
        Some(c) => match c.parse::<usize>() {
            Ok(i) if i < header.len() => i,
            _ => header.iter().position(|h| h == &c).ok_or_else(|| {
                format!("no column {c:?}; the header (separated by {sep:?}) has {header:?}")
            })?,
        },
        None => (0..header.len())
            .find(|i| {
                Some(*i) != time_col && rows[0].1.get(*i).is_some_and(|v| number(v).is_some())
            })
            .ok_or_else(|| {
                let hint = if header.len() == 1 {
                    " (one column found: is the file separated by something other than , ; or tab?)"
                } else {
                    ""
                };
                format!(
                    "no numeric value column in line 2 of {header:?}{hint}; name one with --column"
                )
            })?,
    };
    if time_col.is_none() && step_seconds.is_none() {
        return Err(format!(
            "no timestamp column (named timestamp, time, date or ts) in {header:?}: give --step, e.g. --step 5m"
        ));
    }
    let mut dropped = Cleaned::default();
    // (time, value) of every row in file order; then sorted by time (stably, so of rows with the same time the
    // first in the file comes first), with rows out of order counted: some real exports repeat an hour.
    let mut read: Vec<(i64, f64)> = Vec::with_capacity(rows.len());
    for (index, (line, row)) in rows.iter().enumerate() {
        let cell = row.get(value_col).copied().unwrap_or("");
        let value = number(cell).ok_or_else(|| {
            format!(
                "line {line}: {cell:?} in column {:?} is not a number",
                header[value_col]
            )
        })?;
        let t = match (time_col, step_seconds) {
            (_, Some(step)) => (index as f64 * step * 1000.0) as i64,
            (Some(c), None) => {
                let cell = row.get(c).copied().unwrap_or("");
                parse_time(cell).ok_or_else(|| {
                    format!("line {line}: unreadable timestamp {cell:?}; accepted: {TIME_FORMATS}")
                })?
            }
            (None, None) => unreachable!("checked above"),
        };
        if read.last().is_some_and(|&(previous, _)| t < previous) {
            dropped.out_of_order += 1;
            dropped.first_out_of_order_line.get_or_insert(*line);
        }
        read.push((t, value));
    }
    if dropped.out_of_order > 0 {
        read.sort_by_key(|&(t, _)| t);
    }
    let mut points: Vec<(i64, f64)> = Vec::with_capacity(read.len());
    let mut previous_time = None;
    for (t, value) in read {
        // Repeats are judged against the previous row in time order, kept or not.
        if previous_time.replace(t) == Some(t) {
            dropped.duplicate_time += 1;
            continue;
        }
        if !value.is_finite() {
            dropped.not_finite += 1;
            continue;
        }
        if value < 0.0 {
            dropped.negative += 1;
        }
        points.push((t, value.max(0.0)));
    }
    if points.len() < 2 {
        return Err(format!(
            "{} usable rows after leaving out {} (NaN/infinite {}, repeated timestamp {})",
            points.len(),
            dropped.not_finite + dropped.duplicate_time,
            dropped.not_finite,
            dropped.duplicate_time
        ));
    }
    let start = points[0].0;
    let end = points[points.len() - 1].0;
    // Strictly increasing after the checks above, so the smallest gap is positive.
    let step = points
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .min()
        .expect("two points");
    let steps = (end - start) / step;
    if steps > MAX_POINTS {
        return Err(format!(
            "resampling {} rows at their smallest spacing ({} ms) would make {steps} points (at most {MAX_POINTS}); \
             give --step or remove the rows that are close together",
            points.len(),
            step
        ));
    }
    // Resample onto a regular grid (NAB traces have occasional gaps); gaps hold the last value.
    let mut values = Vec::with_capacity(steps as usize + 1);
    let mut idx = 0;
    let mut t = start;
    while t <= end {
        while idx + 1 < points.len() && points[idx + 1].0 <= t {
            idx += 1;
        }
        values.push(points[idx].1);
        t += step;
    }
    Ok(Trace {
        series: Series {
            step_millis: step,
            values,
        },
        start_millis: start,
        rows: rows.len(),
        cleaned: dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Trace {
        parse(text, None, None).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> String {
        parse(text, None, None).expect_err("must be refused")
    }

    #[test]
    fn timestamps_in_every_format() {
        assert_eq!(parse_time("300"), Some(300_000));
        assert_eq!(parse_time("2014-02-14 14:30:00"), Some(1_392_388_200_000));
        assert_eq!(parse_time("2014-02-14T14:30:00Z"), Some(1_392_388_200_000));
        assert_eq!(
            parse_time("\"2014-02-14T14:30:00Z\""),
            Some(1_392_388_200_000)
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("NaN"), None);
    }

    #[test]
    fn reads_nab_with_gaps() {
        let t = ok(
            "timestamp,value\n2014-02-14 14:30:00,1\n2014-02-14 14:35:00,2\n2014-02-14 14:45:00,4\n",
        );
        assert_eq!(t.series.step_millis, 300_000);
        assert_eq!(t.series.values, vec![1.0, 2.0, 2.0, 4.0]);
        assert_eq!(t.start_millis, 1_392_388_200_000);
        assert_eq!(t.cleaned, Cleaned::default());
    }

    #[test]
    fn reads_headerless_time_with_step_and_column() {
        let text = "avg_cpu,avg_mem\n0.4,0.3\n0.5,0.2\n";
        assert!(parse(text, None, None).unwrap_err().contains("--step"));
        let t = parse(text, Some("avg_mem"), Some(300.0)).unwrap();
        assert_eq!(t.series.values, vec![0.3, 0.2]);
        let t = parse(text, None, Some(300.0)).unwrap();
        assert_eq!(t.series.values, vec![0.4, 0.5]);
        assert!(
            parse(text, Some("nope"), Some(300.0))
                .unwrap_err()
                .contains("no column \"nope\"")
        );
    }

    #[test]
    fn out_of_order_rows_are_sorted_and_counted_with_their_line() {
        // This trace made `simulate` panic with "capacity overflow" (exit 101).
        let t = ok("timestamp,value\n100,1\n200,2\n150,3\n300,4\n");
        assert_eq!(t.cleaned.out_of_order, 1);
        assert_eq!(t.cleaned.first_out_of_order_line, Some(4));
        assert_eq!(t.series.step_millis, 50_000);
        assert_eq!(t.series.values, vec![1.0, 3.0, 2.0, 2.0, 4.0]);
        // An hour exported twice (NAB's machine_temperature_system_failure): sorted, the repeats left out, the
        // first of each time kept.
        let t = ok("timestamp,value\n0,1\n60,2\n120,3\n60,20\n120,30\n180,4\n");
        assert_eq!(t.cleaned.out_of_order, 1);
        assert_eq!(t.cleaned.duplicate_time, 2);
        assert_eq!(t.series.values, vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn nan_negative_and_repeated_rows_are_cleaned_and_counted() {
        let t = ok("time,cpu\n0,1\n60,NaN\n120,-3\n120,5\n180,inf\n240,2\n");
        assert_eq!(
            t.cleaned,
            Cleaned {
                not_finite: 2,
                negative: 1,
                duplicate_time: 1,
                ..Cleaned::default()
            }
        );
        assert_eq!(t.rows, 6);
        // 0 -> 1, 120 -> 0 (was -3), 240 -> 2 on a 120 s grid.
        assert_eq!(t.series.values, vec![1.0, 0.0, 2.0]);
        let e = err("time,cpu\n0,NaN\n60,inf\n");
        assert!(e.contains("0 usable rows"), "{e}");
    }

    #[test]
    fn semicolon_and_tab_separated_files_are_read() {
        let t = ok("timestamp;value\n0;1\n60;2\n");
        assert_eq!(t.series.values, vec![1.0, 2.0]);
        let t = ok("timestamp\tvalue\n0\t1\n60\t2\n");
        assert_eq!(t.series.values, vec![1.0, 2.0]);
        let t = ok("\"timestamp\",\"value\"\n\"0\",\"1\"\n\"60\",\"2\"\n");
        assert_eq!(t.series.values, vec![1.0, 2.0]);
    }

    #[test]
    fn unreadable_cells_name_the_line_and_the_formats() {
        let e = err("timestamp,value\n2014-02-14 14:30:00,1\n14/02/2014 14:35,2\n");
        assert!(e.starts_with("line 3: unreadable timestamp"), "{e}");
        assert!(e.contains("RFC 3339"), "{e}");
        let e = err("timestamp,value\n0,1\n60,high\n");
        assert!(e.starts_with("line 3: \"high\""), "{e}");
        let e = err("value\n");
        assert!(e.contains("at least two"), "{e}");
        assert!(err("").contains("empty"));
        let e = err("timestamp|value\n0|1\n60|2\n");
        assert!(e.contains("one column found"), "{e}");
    }

    #[test]
    fn a_grid_too_fine_for_the_span_is_refused() {
        let e = err("timestamp,value\n0,1\n0.001,2\n9999999,3\n");
        assert!(e.contains("at most"), "{e}");
    }
}
