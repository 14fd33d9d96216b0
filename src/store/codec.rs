//! The on-disk encoding, written by hand: every value starts with a format version byte followed by fixed-width
//! little-endian fields; every key is a 4-byte big-endian deployment id followed by an 8-byte big-endian
//! timestamp with its sign bit flipped, so byte order is (deployment, time) order and range scans come out
//! sorted.
//!
//! | record | bytes | layout after the version byte |
//! | --- | --- | --- |
//! | sample block (one deployment-hour) | 3 + 14 n | count u16, then per sample: ms into the hour u32, cpu % f32, memory % f32 (NaN: unknown), replicas u16 (`u16::MAX`: unknown) |
//! | journal tick (all deployments, key = id 0 + tick time) | 5 + 14 n | count u32, then per deployment: id u32, cpu % f32, memory % f32, replicas u16 |
//! | rollup hour | 169 | 12 five-minute slots of 14 bytes: count u16, cpu mean/max/p95 f16, memory mean/max f16, replicas max u16 |
//! | prediction | 17 | horizon s u32, value f32, lower f32, upper f32 |
//! | decision | 1 + n | JSON bytes |
//! | anomaly (key = id + start time + kind code u8, see [`super::anomalies`]) | 45 + n | severity u8, ended u8 (0 or 1), last seen ms i64, ended ms i64, expected f64, actual f64, score f64, summary length u16, summary UTF-8 |
//!
//! Samples are `f32` (7 significant digits). Rollups are IEEE half-precision `f16` (11 significant bits: 70% is
//! stored to within 0.03 percentage points; finite values above 65504 saturate), which keeps 30 days of
//! five-minute aggregates small; the conversion is written out here with round-to-nearest-even.

use crate::domain::model::UnixMillis;

/// The format version written into every value.
pub const VERSION: u8 = 1;

/// Length of a key.
pub const KEY_LEN: usize = 12;

/// One five-minute bucket.
pub const BUCKET_MILLIS: i64 = 5 * 60_000;

/// Buckets per rollup record (one hour).
pub const SLOTS: usize = 12;

/// Time covered by one rollup record.
pub const HOUR_MILLIS: i64 = BUCKET_MILLIS * SLOTS as i64;

/// Builds a key.
pub fn key(id: u32, at: UnixMillis) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..4].copy_from_slice(&id.to_be_bytes());
    k[4..].copy_from_slice(&((at as u64) ^ (1 << 63)).to_be_bytes());
    k
}

/// Splits a key into deployment id and time.
pub fn split_key(k: &[u8]) -> Option<(u32, UnixMillis)> {
    if k.len() != KEY_LEN {
        return None;
    }
    let id = u32::from_be_bytes(k[..4].try_into().ok()?);
    let at = (u64::from_be_bytes(k[4..].try_into().ok()?) ^ (1 << 63)) as i64;
    Some((id, at))
}

/// Why a value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// Empty value.
    Empty,
    /// A version this build does not read.
    Version(u8),
    /// Wrong length for the version.
    Length {
        /// Expected.
        expected: usize,
        /// Found.
        found: usize,
    },
    /// A field holds a value no build writes (an unknown code, text that is not UTF-8).
    Invalid(&'static str),
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::Empty => f.write_str("empty value"),
            CodecError::Version(v) => write!(f, "format version {v}, this build reads {VERSION}"),
            CodecError::Length { expected, found } => {
                write!(f, "{found} bytes, expected {expected}")
            }
            CodecError::Invalid(what) => write!(f, "invalid {what}"),
        }
    }
}

/// A fixed-width record.
pub trait Record: Sized {
    /// Encoded length, version byte included.
    const LEN: usize;
    /// Writes the fields (after the version byte) into `out`, which is `LEN - 1` bytes.
    fn write(&self, out: &mut Encoder<'_>);
    /// Reads the fields.
    fn read(input: &mut Reader<'_>) -> Self;

    /// Encodes with the version byte.
    fn encode(&self) -> Vec<u8> {
        let mut buf = vec![0u8; Self::LEN];
        buf[0] = VERSION;
        self.write(&mut Encoder {
            buf: &mut buf[1..],
            pos: 0,
        });
        buf
    }

    /// Decodes, checking version and length.
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        match bytes.first() {
            None => Err(CodecError::Empty),
            Some(&VERSION) if bytes.len() == Self::LEN => Ok(Self::read(&mut Reader {
                buf: &bytes[1..],
                pos: 0,
            })),
            Some(&VERSION) => Err(CodecError::Length {
                expected: Self::LEN,
                found: bytes.len(),
            }),
            Some(&v) => Err(CodecError::Version(v)),
        }
    }
}

/// Writes little-endian fields into a fixed buffer.
pub struct Encoder<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Encoder<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }
    /// An `f32` from an `f64`.
    pub fn f32(&mut self, v: f64) {
        self.put(&(v as f32).to_le_bytes());
    }
    /// A half-precision float from an `f64`.
    pub fn f16(&mut self, v: f64) {
        self.u16(f16_bits(v));
    }
    /// A `u16`.
    pub fn u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes());
    }
    /// A `u32`.
    pub fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
}

/// Reads little-endian fields from a buffer of checked length.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        out
    }
    /// An `f32` as `f64`.
    pub fn f32(&mut self) -> f64 {
        f64::from(f32::from_le_bytes(self.take()))
    }
    /// A half-precision float as `f64`.
    pub fn f16(&mut self) -> f64 {
        f16_value(self.u16())
    }
    /// A `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    /// A `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
}

/// IEEE 754 half-precision bits of `v`, rounded to nearest even; finite values beyond the range saturate to
/// ±65504, NaN stays NaN.
pub fn f16_bits(v: f64) -> u16 {
    let x = (v as f32).to_bits();
    let sign = ((x >> 16) & 0x8000) as u16;
    let exp = ((x >> 23) & 0xff) as i32;
    let man = x & 0x7f_ffff;
    if exp == 0xff {
        return if man != 0 {
            sign | 0x7e00
        } else {
            sign | 0x7c00
        };
    }
    let e = exp - 127 + 15;
    if e <= 0 {
        // Subnormal half (or zero): units of 2^-24.
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rounded = (m + half - 1 + ((m >> shift) & 1)) >> shift;
        return sign | rounded as u16;
    }
    let rounded = man + 0xfff + ((man >> 13) & 1);
    let (e, m) = if rounded & 0x80_0000 != 0 {
        (e + 1, 0)
    } else {
        (e, rounded >> 13)
    };
    if e >= 0x1f {
        return sign | 0x7bff;
    }
    sign | ((e as u16) << 10) | m as u16
}

/// The value of half-precision bits.
pub fn f16_value(h: u16) -> f64 {
    let negative = h & 0x8000 != 0;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let magnitude = match exp {
        0 => f64::from(man) * 2f64.powi(-24),
        0x1f if man == 0 => f64::INFINITY,
        0x1f => f64::NAN,
        _ => f64::from(f32::from_bits(((exp + 112) << 23) | (man << 13))),
    };
    if negative { -magnitude } else { magnitude }
}

fn opt_f32(v: Option<f64>) -> f64 {
    v.filter(|v| v.is_finite()).unwrap_or(f64::NAN)
}

fn read_opt(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn replicas_u16(v: Option<u32>) -> u16 {
    v.map_or(u16::MAX, |r| r.min(u32::from(u16::MAX - 1)) as u16)
}

fn read_replicas(v: u16) -> Option<u32> {
    (v != u16::MAX).then_some(u32::from(v))
}

/// One deployment on one tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When.
    pub at: UnixMillis,
    /// CPU utilization, percent of requests.
    pub cpu_percent: f64,
    /// Memory utilization, percent of requests, when known.
    pub memory_percent: Option<f64>,
    /// Replicas (spec), when known; stored saturated at 65534.
    pub replicas: Option<u32>,
}

/// A [`Sample`] without its time (the time is in the key).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SampleValue {
    pub cpu_percent: f64,
    pub memory_percent: Option<f64>,
    pub replicas: Option<u32>,
}

impl SampleValue {
    const LEN: usize = 10;
    fn write(&self, out: &mut Encoder<'_>) {
        out.f32(self.cpu_percent);
        out.f32(opt_f32(self.memory_percent));
        out.u16(replicas_u16(self.replicas));
    }
    fn read(input: &mut Reader<'_>) -> Self {
        SampleValue {
            cpu_percent: input.f32(),
            memory_percent: read_opt(input.f32()),
            replicas: read_replicas(input.u16()),
        }
    }
}

/// A [`SampleValue`] as it is encoded (`f32` values, NaN for no memory, replicas saturated at 65534 and
/// `u16::MAX` for none), for samples held in memory until they are written: 12 bytes instead of 32, and read
/// back exactly as they will be after the write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PackedSample {
    cpu_percent: f32,
    memory_percent: f32,
    replicas: u16,
}

impl PackedSample {
    pub(crate) fn pack(value: &SampleValue) -> Self {
        PackedSample {
            cpu_percent: value.cpu_percent as f32,
            memory_percent: opt_f32(value.memory_percent) as f32,
            replicas: replicas_u16(value.replicas),
        }
    }

    pub(crate) fn unpack(&self) -> SampleValue {
        SampleValue {
            cpu_percent: f64::from(self.cpu_percent),
            memory_percent: read_opt(f64::from(self.memory_percent)),
            replicas: read_replicas(self.replicas),
        }
    }
}

/// Encodes `(u32 tag, sample)` rows behind the version byte and a count of `count_len` bytes.
fn encode_rows(
    rows: impl ExactSizeIterator<Item = (u32, SampleValue)>,
    wide_count: bool,
) -> Vec<u8> {
    let n = rows.len();
    let head = if wide_count { 5 } else { 3 };
    let mut buf = vec![0u8; head + n * (4 + SampleValue::LEN)];
    buf[0] = VERSION;
    let mut out = Encoder {
        buf: &mut buf[1..],
        pos: 0,
    };
    if wide_count {
        out.u32(n as u32);
    } else {
        out.u16(n.min(usize::from(u16::MAX)) as u16);
    }
    for (tag, value) in rows.take(if wide_count {
        n
    } else {
        n.min(usize::from(u16::MAX))
    }) {
        out.u32(tag);
        value.write(&mut out);
    }
    buf
}

fn decode_rows(bytes: &[u8], wide_count: bool) -> Result<Vec<(u32, SampleValue)>, CodecError> {
    let head = if wide_count { 5 } else { 3 };
    match bytes.first() {
        None => return Err(CodecError::Empty),
        Some(&VERSION) => {}
        Some(&v) => return Err(CodecError::Version(v)),
    }
    if bytes.len() < head {
        return Err(CodecError::Length {
            expected: head,
            found: bytes.len(),
        });
    }
    let mut input = Reader {
        buf: &bytes[1..],
        pos: 0,
    };
    let n = if wide_count {
        input.u32() as usize
    } else {
        usize::from(input.u16())
    };
    let expected = head + n * (4 + SampleValue::LEN);
    if bytes.len() != expected {
        return Err(CodecError::Length {
            expected,
            found: bytes.len(),
        });
    }
    Ok((0..n)
        .map(|_| (input.u32(), SampleValue::read(&mut input)))
        .collect())
}

/// Encodes the samples of one deployment-hour (times within `[hour, hour + 1 h)`, at most 65535).
pub(crate) fn encode_block(hour: UnixMillis, rows: &[(UnixMillis, SampleValue)]) -> Vec<u8> {
    encode_rows(rows.iter().map(|(at, v)| ((at - hour) as u32, *v)), false)
}

/// Decodes [`encode_block`].
pub(crate) fn decode_block(
    hour: UnixMillis,
    bytes: &[u8],
) -> Result<Vec<(UnixMillis, SampleValue)>, CodecError> {
    Ok(decode_rows(bytes, false)?
        .into_iter()
        .map(|(offset, v)| (hour + i64::from(offset), v))
        .collect())
}

/// Encodes one tick of every deployment for the journal.
pub(crate) fn encode_journal(rows: &[(u32, SampleValue)]) -> Vec<u8> {
    encode_rows(rows.iter().copied(), true)
}

/// Decodes [`encode_journal`].
pub(crate) fn decode_journal(bytes: &[u8]) -> Result<Vec<(u32, SampleValue)>, CodecError> {
    decode_rows(bytes, true)
}

/// Aggregates of one five-minute bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rollup {
    /// Start of the bucket.
    pub start: UnixMillis,
    /// Samples aggregated.
    pub samples: u32,
    /// Mean CPU utilization, percent.
    pub cpu_mean: f64,
    /// Largest CPU utilization, percent.
    pub cpu_max: f64,
    /// 95th percentile (nearest rank) of CPU utilization, percent.
    pub cpu_p95: f64,
    /// Mean memory utilization over samples that had it, percent.
    pub memory_mean: Option<f64>,
    /// Largest memory utilization, percent.
    pub memory_max: Option<f64>,
    /// Largest replica count.
    pub replicas_max: Option<u32>,
}

impl Rollup {
    /// Aggregates samples (all in one bucket starting at `start`); `None` for no samples.
    pub fn of(start: UnixMillis, samples: &[SampleLike]) -> Option<Rollup> {
        if samples.is_empty() {
            return None;
        }
        let mut cpu: Vec<f64> = samples.iter().map(|s| s.0).collect();
        cpu.sort_by(f64::total_cmp);
        let n = cpu.len();
        let rank = ((0.95 * n as f64).ceil() as usize).clamp(1, n);
        let memory: Vec<f64> = samples.iter().filter_map(|s| s.1).collect();
        Some(Rollup {
            start,
            samples: n as u32,
            cpu_mean: cpu.iter().sum::<f64>() / n as f64,
            cpu_max: cpu[n - 1],
            cpu_p95: cpu[rank - 1],
            memory_mean: (!memory.is_empty())
                .then(|| memory.iter().sum::<f64>() / memory.len() as f64),
            memory_max: memory.iter().copied().reduce(f64::max),
            replicas_max: samples.iter().filter_map(|s| s.2).max(),
        })
    }
}

/// `(cpu, memory, replicas)` of one sample, as aggregated.
pub type SampleLike = (f64, Option<f64>, Option<u32>);

/// Twelve five-minute rollups of one hour.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct RollupHour {
    pub slots: [Option<Rollup>; SLOTS],
}

const SLOT_LEN: usize = 14;

impl RollupHour {
    /// Decodes with the hour start from the key.
    pub fn decode_at(hour: UnixMillis, bytes: &[u8]) -> Result<RollupHour, CodecError> {
        let mut h = RollupHour::decode(bytes)?;
        for (i, slot) in h.slots.iter_mut().enumerate() {
            if let Some(r) = slot {
                r.start = hour + i as i64 * BUCKET_MILLIS;
            }
        }
        Ok(h)
    }

    /// Fills slots that are empty here from `other` (slots present here win, which makes rolling the same
    /// samples up twice, after a crash between writing the rollup and deleting the samples, harmless).
    pub fn fill_from(&mut self, other: &RollupHour) {
        for (mine, theirs) in self.slots.iter_mut().zip(&other.slots) {
            if mine.is_none() {
                *mine = *theirs;
            }
        }
    }
}

impl Record for RollupHour {
    const LEN: usize = 1 + SLOTS * SLOT_LEN;
    fn write(&self, out: &mut Encoder<'_>) {
        for slot in &self.slots {
            match slot {
                Some(r) => {
                    out.u16(r.samples.clamp(1, u32::from(u16::MAX)) as u16);
                    out.f16(r.cpu_mean);
                    out.f16(r.cpu_max);
                    out.f16(r.cpu_p95);
                    out.f16(opt_f32(r.memory_mean));
                    out.f16(opt_f32(r.memory_max));
                    out.u16(replicas_u16(r.replicas_max));
                }
                None => {
                    out.u16(0);
                    for _ in 0..5 {
                        out.f16(0.0);
                    }
                    out.u16(0);
                }
            }
        }
    }
    fn read(input: &mut Reader<'_>) -> Self {
        let mut h = RollupHour::default();
        for slot in &mut h.slots {
            let samples = u32::from(input.u16());
            let (cpu_mean, cpu_max, cpu_p95) = (input.f16(), input.f16(), input.f16());
            let (memory_mean, memory_max) = (read_opt(input.f16()), read_opt(input.f16()));
            let replicas_max = read_replicas(input.u16());
            if samples > 0 {
                *slot = Some(Rollup {
                    start: 0,
                    samples,
                    cpu_mean,
                    cpu_max,
                    cpu_p95,
                    memory_mean,
                    memory_max,
                    replicas_max,
                });
            }
        }
        h
    }
}

/// A stored forecast.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// How far ahead of its timestamp the forecast looks, seconds.
    pub horizon_seconds: u32,
    /// Forecast CPU demand: utilization times ready pods, percent of one pod's request (what `src/refit.rs` stores:
    /// the largest demand forecast over the lead time).
    pub value: f64,
    /// Lower bound of the interval.
    pub lower: f64,
    /// Upper bound of the interval.
    pub upper: f64,
}

impl Record for Prediction {
    const LEN: usize = 17;
    fn write(&self, out: &mut Encoder<'_>) {
        out.u32(self.horizon_seconds);
        out.f32(self.value);
        out.f32(self.lower);
        out.f32(self.upper);
    }
    fn read(input: &mut Reader<'_>) -> Self {
        Prediction {
            horizon_seconds: input.u32(),
            value: input.f32(),
            lower: input.f32(),
            upper: input.f32(),
        }
    }
}

/// Encodes variable-length bytes (a decision's JSON) behind the version byte.
pub fn encode_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 1);
    out.push(VERSION);
    out.extend_from_slice(bytes);
    out
}

/// Decodes [`encode_bytes`].
pub fn decode_bytes(value: &[u8]) -> Result<&[u8], CodecError> {
    match value.split_first() {
        None => Err(CodecError::Empty),
        Some((&VERSION, rest)) => Ok(rest),
        Some((&v, _)) => Err(CodecError::Version(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_round_trips_and_rounds_to_nearest() {
        for v in [
            0.0,
            1.0,
            -2.5,
            0.5,
            73.25,
            100.0,
            1024.0,
            65504.0,
            2f64.powi(-24),
            2f64.powi(-14),
        ] {
            assert_eq!(f16_value(f16_bits(v)), v, "{v}");
        }
        assert_eq!(f16_bits(1.0), 0x3c00);
        assert_eq!(f16_bits(-2.0), 0xc000);
        assert_eq!(f16_bits(65504.0), 0x7bff);
        assert_eq!(f16_bits(1e9), 0x7bff, "finite overflow saturates");
        assert_eq!(f16_bits(f64::INFINITY), 0x7c00);
        assert!(f16_value(f16_bits(f64::NAN)).is_nan());
        assert_eq!(f16_value(0x7c00), f64::INFINITY);
        // Ties go to even: 1 + 2^-11 is halfway between 1 and 1 + 2^-10.
        assert_eq!(f16_bits(1.0 + 2f64.powi(-11)), 0x3c00);
        assert_eq!(f16_bits(1.0 + 3.0 * 2f64.powi(-11)), 0x3c02);
        // Rounding up into the next exponent.
        assert_eq!(f16_bits(2.0 - 2f64.powi(-12)), 0x4000);
        // Subnormals.
        assert_eq!(f16_bits(3.0 * 2f64.powi(-24)), 3);
        assert_eq!(f16_bits(2f64.powi(-26)), 0);
        // Relative error at most 2^-11 over the range utilizations take.
        let mut v = 0.001;
        while v < 60_000.0 {
            let back = f16_value(f16_bits(v));
            assert!(
                ((back - v) / v).abs() <= 2f64.powi(-11) + 1e-12,
                "{v} -> {back}"
            );
            v *= 1.0137;
        }
    }

    #[test]
    fn keys_sort_by_deployment_then_time() {
        let times = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        let mut keys: Vec<[u8; KEY_LEN]> = Vec::new();
        for id in [0u32, 1, 256, u32::MAX] {
            for &t in &times {
                let k = key(id, t);
                assert_eq!(split_key(&k), Some((id, t)));
                keys.push(k);
            }
        }
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(split_key(&[0; 5]), None);
    }

    #[test]
    fn sample_blocks_and_journal_ticks_round_trip() {
        let s = SampleValue {
            cpu_percent: 73.25,
            memory_percent: Some(41.5),
            replicas: Some(12),
        };
        let unknown = SampleValue {
            cpu_percent: 1.0,
            memory_percent: None,
            replicas: None,
        };
        let hour = 3_600_000 * 500_000;
        let rows = vec![(hour, s), (hour + 15_000, unknown), (hour + 3_599_999, s)];
        let bytes = encode_block(hour, &rows);
        assert_eq!(bytes.len(), 3 + 3 * 14);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(bytes[1..3], 3u16.to_le_bytes());
        assert_eq!(bytes[3..7], 0u32.to_le_bytes());
        assert_eq!(bytes[7..11], 73.25f32.to_le_bytes(), "little-endian f32");
        assert_eq!(decode_block(hour, &bytes), Ok(rows));
        let big = SampleValue {
            replicas: Some(1_000_000),
            ..unknown
        };
        let tick = vec![(0, s), (7, big)];
        let bytes = encode_journal(&tick);
        assert_eq!(bytes.len(), 5 + 2 * 14);
        let back = decode_journal(&bytes).unwrap();
        assert_eq!(back[0], (0, s));
        assert_eq!(back[1].1.replicas, Some(65_534), "saturated");
        assert_eq!(decode_block(0, &[]), Err(CodecError::Empty));
        assert_eq!(decode_block(0, &[2, 0, 0]), Err(CodecError::Version(2)));
        assert_eq!(
            decode_block(0, &[VERSION, 1, 0]),
            Err(CodecError::Length {
                expected: 17,
                found: 3
            })
        );
        assert!(decode_journal(&[VERSION, 0]).is_err());
    }

    #[test]
    fn decoding_checks_version_and_length() {
        let mut bytes = Prediction {
            horizon_seconds: 600,
            value: 1.0,
            lower: 0.5,
            upper: 2.0,
        }
        .encode();
        assert!(Prediction::decode(&bytes).is_ok());
        bytes[0] = 2;
        assert_eq!(Prediction::decode(&bytes), Err(CodecError::Version(2)));
        assert_eq!(
            Prediction::decode(&[VERSION, 1, 2]),
            Err(CodecError::Length {
                expected: 17,
                found: 3
            })
        );
        assert_eq!(Prediction::decode(&[]), Err(CodecError::Empty));
        assert_eq!(decode_bytes(&encode_bytes(b"{}")), Ok(&b"{}"[..]));
        assert_eq!(decode_bytes(&[9, 1]), Err(CodecError::Version(9)));
    }

    #[test]
    fn rollups_aggregate_mean_max_p95() {
        let samples: Vec<SampleLike> = (1..=20)
            .map(|i| {
                (
                    f64::from(i),
                    (i % 2 == 0).then_some(10.0 * f64::from(i)),
                    Some(i as u32),
                )
            })
            .collect();
        let r = Rollup::of(0, &samples).unwrap();
        assert_eq!(r.samples, 20);
        assert_eq!(r.cpu_mean, 10.5);
        assert_eq!(r.cpu_max, 20.0);
        assert_eq!(r.cpu_p95, 19.0);
        assert_eq!(r.memory_mean, Some(110.0));
        assert_eq!(r.memory_max, Some(200.0));
        assert_eq!(r.replicas_max, Some(20));
        let one = Rollup::of(0, &[(5.0, None, None)]).unwrap();
        assert_eq!((one.cpu_p95, one.memory_mean), (5.0, None));
        assert!(Rollup::of(0, &[]).is_none());
    }

    #[test]
    fn rollup_hours_round_trip_and_merge() {
        let mut h = RollupHour::default();
        h.slots[0] = Rollup::of(3_600_000, &[(1.0, Some(2.0), Some(3))]);
        h.slots[11] = Rollup::of(3_600_000 + 11 * BUCKET_MILLIS, &[(4.0, None, None)]);
        let bytes = h.encode();
        assert_eq!(bytes.len(), 169);
        assert_eq!(RollupHour::decode_at(3_600_000, &bytes), Ok(h.clone()));
        let mut other = RollupHour::default();
        other.slots[0] = Rollup::of(3_600_000, &[(99.0, None, None)]);
        other.slots[5] = Rollup::of(3_600_000 + 5 * BUCKET_MILLIS, &[(7.0, None, None)]);
        let mut merged = h.clone();
        merged.fill_from(&other);
        assert_eq!(merged.slots[0].unwrap().cpu_mean, 1.0);
        assert_eq!(merged.slots[5].unwrap().cpu_mean, 7.0);
        assert_eq!(merged.slots[11], h.slots[11]);
    }
}
