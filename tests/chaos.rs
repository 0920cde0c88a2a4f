//! The chaos run, short: 20 `pubsocketd.v1` clients that resume with
//! `since`, 200 msg/s for 8 s, Redis (AOF, `appendfsync always`) SIGKILLed
//! and restarted, the relay stopped with SIGTERM and started again, 20 % of
//! the clients dropped every 2 s. The run itself is loadtest/src/chaos.rs,
//! the same code as the long run of the `chaos` tool, included here by
//! path (it uses only crates this package has too), against the relay
//! binary of this build.
//!
//! Under Pub/Sub with `-history` the same faults lose messages (Redis
//! forgets what it published while the relay was away; the relay's history
//! dies with it); the test checks that every loss is announced with
//! `recovered:false`.

#[path = "../loadtest/src/chaos.rs"]
mod chaos;

use chaos::{Config, Mode, Outcome};
use std::time::Duration;

fn short(mode: Mode) -> Config {
    let mut cfg = Config::new(env!("CARGO_BIN_EXE_pubsocketd"), mode);
    cfg.clients = 20;
    cfg.rate = 200.0;
    cfg.duration = Duration::from_secs(8);
    cfg.drop_every = Some(Duration::from_secs(2));
    cfg.settle = Duration::from_secs(10);
    cfg
}

async fn run(cfg: Config) -> Outcome {
    let out = chaos::run(&cfg).await.expect("chaos run");
    out.print();
    assert_eq!(out.published, 1600, "the publisher got every message in");
    out
}

#[tokio::test]
async fn streams_lose_nothing_through_every_fault() {
    let out = run(short(Mode::Stream)).await;
    assert_eq!(
        (
            out.lost,
            out.duplicated,
            out.reordered,
            out.clients_unfinished
        ),
        (0, 0, 0, 0),
        "lost, duplicated, reordered, unfinished clients"
    );
}

#[tokio::test]
async fn pubsub_history_loses_nothing_when_only_clients_drop() {
    let mut cfg = short(Mode::Pubsub);
    cfg.kill_redis = false;
    cfg.restart_relay = false;
    let out = run(cfg).await;
    assert_eq!(
        (out.lost, out.duplicated, out.reordered, out.recovered_false),
        (0, 0, 0, 0),
        "lost, duplicated, reordered, recovered:false"
    );
    assert!(out.recovered_true > 0, "resumes happened");
}

#[tokio::test]
async fn pubsub_history_announces_every_loss_with_recovered_false() {
    let out = run(short(Mode::Pubsub)).await;
    assert!(
        out.announced(),
        "every lost message announced by recovered:false, none twice or out of order: {out:?}"
    );
}
