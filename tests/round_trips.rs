//! The snapshot over a link where every round trip costs tens of ms (the team's VPN, issue
//! 10): what it asks of the source is counted in round trips through a proxy. One per chunk,
//! one more per table to confirm its last chunk, and a set-up that does not grow with the
//! number of tables; so the link's latency adds little to a copy of many small tables.

mod support;
use support::*;

#[test]
fn snapshot_round_trips_are_one_per_chunk() {
    let src = Server::source("rt-src");
    let dst = Server::target("rt-dst");
    let small = 40;
    let mut setup = String::from("CREATE DATABASE rt; USE rt;\n");
    for i in 0..small {
        setup.push_str(&format!(
            "CREATE TABLE s{i} (id INT PRIMARY KEY, v VARCHAR(20), KEY (v)); \
             INSERT INTO s{i} SELECT seq, CONCAT('v', seq) FROM seq_1_to_10;\n"
        ));
    }
    setup.push_str(
        "CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(20)); \
         INSERT INTO big SELECT seq, CONCAT('큰 ', seq) FROM seq_1_to_9999;\n\
         CREATE VIEW v_big AS SELECT id FROM big WHERE id < 10;\n",
    );
    src.sql(&setup);
    let proxy = proxy::Proxy::start(src.port);
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let out = migrate(
        &proxy.url(),
        &dst.url(),
        &state,
        &[
            "snapshot",
            "--databases",
            "rt",
            "--chunk-rows",
            "500",
            "--threads",
            "4",
        ],
    );
    assert_ok(&out);
    assert_same(&src, &dst, "rt");
    let round_trips = proxy.round_trips();
    // chunks: one per small table, 20 for `big` (9999 rows by 500); each table's last chunk is
    // confirmed by one more round trip, and so is a chunk of `big` whenever its writer is behind
    // (the reader then closes its snapshot rather than keep it open while it waits)
    let (big_chunks, tables) = (20, small + 1);
    let chunks = small + big_chunks;
    // connections (handshake and session), listing, descriptions (32 tables per round trip),
    // database and object definitions, the listing after the copy, the GTID ends
    let set_up = 30;
    let budget = chunks + tables + (big_chunks - 1) + set_up;
    eprintln!("{round_trips} round trips to the source (budget {budget})");
    assert!(
        round_trips <= budget,
        "{round_trips} round trips to the source for {chunks} chunks of {tables} tables (at most {budget}: one per chunk, one per table, one per pause, {set_up} for the rest)"
    );
}
