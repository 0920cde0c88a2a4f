//! Settings shared by every bench: short runs, so that `cargo bench` stays
//! under a few minutes on a small machine.

use criterion::Criterion;
use std::time::Duration;

/// 20 samples, 1 s warm-up, 2 s of measurement.
pub fn quick() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}
