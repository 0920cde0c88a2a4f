//! Cutting an input into pieces, as reads from a socket would: the
//! parsers must give the same result however their input is split.

/// Inputs up to this size are split at every point; larger ones at
/// [`RANDOM_SPLITS`] points derived from the input.
const ALL_SPLITS_UP_TO: usize = 512;
const RANDOM_SPLITS: usize = 64;

/// Where to cut `data` for the split runs: every point for small inputs,
/// otherwise pseudo-random points derived from the input itself (so a
/// replayed input is always checked the same way).
pub fn split_points(data: &[u8]) -> Vec<usize> {
    let n = data.len();
    if n <= ALL_SPLITS_UP_TO {
        return (1..n).collect();
    }
    // FNV-1a of the first bytes and the length seeds a xorshift64.
    let mut seed = 0xcbf2_9ce4_8422_2325u64 ^ n as u64;
    for b in &data[..32] {
        seed = (seed ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut points: Vec<usize> = (0..RANDOM_SPLITS)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            1 + (seed % (n as u64 - 1)) as usize
        })
        .collect();
    points.sort_unstable();
    points.dedup();
    points
}

/// The pieces of `data` between the sorted cut points `cuts`.
pub fn pieces<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut from = 0;
    for &cut in cuts {
        out.push(&data[from..cut]);
        from = cut;
    }
    out.push(&data[from..]);
    out
}
