//! Three replicas of a two-partition log, each with its own log directory
//! and HTTP listener on loopback, talking real HTTP: proposals commit on a
//! majority at the same offsets everywhere, a leader's loss elects another
//! that keeps every committed record, and a minority commits nothing.

// Test code: a panic with its message is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use herald_log::LogConfig;
use herald_raft::{PeerAddr, ReplicaError};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proposals_commit_on_a_majority_and_survive_the_leaders_loss() {
    let mut nodes = cluster(3).await;
    let l = leader_of(&nodes, 0, Duration::from_secs(10)).await;
    // Producers folded into entries: each gets its own first offset.
    let mut firsts = Vec::new();
    for k in 0..20 {
        firsts.push(
            nodes[l]
                .replicas
                .propose(0, recs(&format!("a{k}"), 5))
                .await
                .unwrap(),
        );
    }
    assert_eq!(firsts[0], 0);
    assert!(firsts.windows(2).all(|w| w[1] == w[0] + 5), "{firsts:?}");
    // A follower refuses to propose and names the leader.
    let f = (l + 1) % 3;
    let start = Instant::now();
    loop {
        match nodes[f].replicas.propose(0, recs("x", 1)).await {
            Err(ReplicaError::NotLeader {
                leader: Some(p), ..
            }) => {
                assert_eq!(p.name, nodes[l].name);
                break;
            }
            Err(ReplicaError::NotLeader { leader: None, .. }) => {}
            other => panic!("a follower proposed: {other:?}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the follower never learnt its leader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every replica holds the same records at the same offsets.
    let on_leader = records_on(&nodes[l], 0, 100).await;
    for n in &nodes {
        assert_eq!(records_on(n, 0, 100).await, on_leader, "{} differs", n.name);
    }

    // The leader goes (its groups stop, its listener closes).
    let gone = nodes.remove(l);
    gone.replicas.shutdown().await;
    gone.server.abort();
    let started = Instant::now();
    let l2 = leader_of(&nodes, 0, Duration::from_secs(10)).await;
    let first = nodes[l2].replicas.propose(0, recs("b", 3)).await.unwrap();
    eprintln!("a new leader took writes after {:?}", started.elapsed());
    assert_eq!(first, 100, "the new leader continues the offsets");
    for n in &nodes {
        let got = records_on(n, 0, 103).await;
        assert_eq!(
            &got[..100],
            &on_leader[..],
            "{} lost committed records",
            n.name
        );
        assert_eq!(got[100].1, Bytes::from("b-0"));
    }

    // One replica alone is a minority: nothing commits, and it says so.
    let last = nodes.remove(l2);
    last.replicas.shutdown().await;
    last.server.abort();
    let alone = &nodes[0];
    let r = alone.replicas.propose(0, recs("c", 1)).await;
    assert!(
        matches!(
            r,
            Err(ReplicaError::NotLeader { .. }) | Err(ReplicaError::NotEnoughReplicas { .. })
        ),
        "a minority committed: {r:?}"
    );
    let held = records_on(alone, 0, 103).await;
    assert!(
        held.iter().all(|(_, b)| !b.starts_with(b"c-")),
        "a minority wrote"
    );
    alone.replicas.shutdown().await;
    drop(gone.log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_behind_the_leaders_retention_continues_from_its_start() {
    let log_cfg = LogConfig {
        partitions: 1,
        replicated: true,
        segment_bytes: 16 * 1024,
        retention_bytes: Some(1),
        retention_check_ms: 100,
        ..LogConfig::default()
    };
    let mut nodes = cluster_with(3, log_cfg.clone()).await;
    let peers: Vec<PeerAddr> = nodes
        .iter()
        .map(|n| n.replicas.replicas_of(0))
        .next()
        .unwrap();
    let l = leader_of(&nodes, 0, Duration::from_secs(10)).await;
    let f = (l + 1) % 3;
    let lead_name = nodes[l].name.clone();
    // A follower goes, with its disk.
    let victim = nodes.remove(f);
    let victim_name = victim.name.clone();
    let victim_i = peers.iter().position(|p| p.name == victim_name).unwrap();
    let addr = peers[victim_i].addr.clone();
    drop(stop_node(victim).await);
    let l = nodes.iter().position(|n| n.name == lead_name).unwrap();
    // The others take more than retention keeps (16 KiB segments).
    let body = "x".repeat(200);
    let mut last = Bytes::new();
    for k in 0..100 {
        let r: Vec<Bytes> = (0..5)
            .map(|i| Bytes::from(format!("r{k}-{i}-{body}")))
            .collect();
        last = r[4].clone();
        nodes[l].replicas.propose(0, r).await.unwrap();
    }
    // Fan-out is done with everything: retention may remove it.
    let start = Instant::now();
    loop {
        for n in &nodes {
            let (_, end) = n.log.bounds(0).unwrap();
            n.log.checkpoints().commit("fanout", 0, end).unwrap();
            n.log.enforce_retention().await.unwrap();
        }
        // Removed on the leader's disk, and forgotten by its group.
        if nodes[l].log.bounds(0).unwrap().0 > 0 && nodes[l].replicas.purged(0).is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "retention never removed a segment on the leader ({:?})",
            nodes[l].log.bounds(0)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader_first = nodes[l].log.bounds(0).unwrap().0;
    // The follower comes back empty; the entries it would need are gone.
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let back = start_node(
        &peers,
        victim_i,
        listener,
        tempfile::tempdir().unwrap(),
        log_cfg.clone(),
    )
    .await;
    let start = Instant::now();
    loop {
        let got = held(&back, 0);
        if got.last().map(|r| &r.1) == Some(&last) {
            let (first, _) = got[0];
            assert!(
                first >= leader_first,
                "it holds {first}, before the leader's {leader_first}"
            );
            let on_leader: Vec<_> = held(&nodes[l], 0)
                .into_iter()
                .filter(|r| r.0 >= first)
                .collect();
            assert_eq!(got, on_leader, "the refilled copy differs");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the wiped replica was never refilled (holds {} records)",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It counts in the majority: with the other follower gone, the leader
    // still commits.
    let other = nodes.iter().position(|n| n.name != lead_name).unwrap();
    let other = nodes.remove(other);
    drop(stop_node(other).await);
    let l = nodes.iter().position(|n| n.name == lead_name).unwrap();
    nodes[l]
        .replicas
        .propose(0, vec![Bytes::from("after")])
        .await
        .unwrap();
    // And it opens again from its start after a restart.
    let dir = stop_node(back).await;
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let back = start_node(&peers, victim_i, listener, dir, log_cfg).await;
    let start = Instant::now();
    loop {
        match nodes[l]
            .replicas
            .propose(0, vec![Bytes::from("again")])
            .await
        {
            Ok(_) => break,
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(20),
                "no commit with the restarted replica: {e}"
            ),
        }
    }
    assert_eq!(
        held(&back, 0).last().map(|r| r.1.clone()),
        Some(Bytes::from("again"))
    );
    back.replicas.shutdown().await;
    for n in nodes {
        n.replicas.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_replica_grants_no_vote_until_it_is_refilled() {
    let mut nodes = cluster(3).await;
    let peers = nodes[0].replicas.replicas_of(0);
    let l = leader_of(&nodes, 0, Duration::from_secs(10)).await;
    for k in 0..5 {
        nodes[l]
            .replicas
            .propose(0, recs(&format!("v{k}"), 2))
            .await
            .unwrap();
    }
    let lead_name = nodes[l].name.clone();
    let lead_i = peers.iter().position(|p| p.name == lead_name).unwrap();
    let w = (l + 1) % 3;
    let wiped_name = nodes[w].name.clone();
    let wiped_i = peers.iter().position(|p| p.name == wiped_name).unwrap();
    // The leader stops (its disk kept) and a follower loses its disk.
    let gone = nodes.remove(l);
    let lead_dir = stop_node(gone).await;
    let w = nodes.iter().position(|n| n.name == wiped_name).unwrap();
    drop(stop_node(nodes.remove(w)).await);
    let listener = tokio::net::TcpListener::bind(&peers[wiped_i].addr)
        .await
        .unwrap();
    let wiped = start_node(
        &peers,
        wiped_i,
        listener,
        tempfile::tempdir().unwrap(),
        log_config(),
    )
    .await;
    let start = Instant::now();
    while !wiped.replicas.refilling(0) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the empty replica never saw the group exists"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Asked for a vote in a term far ahead, it grants none.
    let survivor = &nodes[0];
    let req = openraft::raft::VoteRequest::<u64>::new(
        openraft::Vote::new(1_000, survivor.replicas.id()),
        None,
    );
    let body = rmp_serde::to_vec_named(&req).unwrap();
    let answer = wiped.replicas.serve(0, "vote", &body).await.unwrap();
    let answer: Result<openraft::raft::VoteResponse<u64>, openraft::error::RaftError<u64>> =
        rmp_serde::from_slice(&answer).unwrap();
    assert!(!answer.unwrap().vote_granted, "an empty replica voted");
    // The old leader returns: a leader is elected without the empty
    // replica's vote, refills it, and from then on it votes.
    let listener = tokio::net::TcpListener::bind(&peers[lead_i].addr)
        .await
        .unwrap();
    let back = start_node(&peers, lead_i, listener, lead_dir, log_config()).await;
    let got = records_on(&wiped, 0, 10).await;
    assert_eq!(
        got.len(),
        10,
        "the refilled replica holds every committed record"
    );
    let start = Instant::now();
    while wiped.replicas.refilling(0) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still refusing votes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in [back, wiped].iter().chain(nodes.iter()) {
        n.replicas.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_goes_back_to_the_preferred_replica() {
    let mut nodes = cluster(3).await;
    let peers = nodes[0].replicas.replicas_of(0);
    let preferred = nodes[0].replicas.preferred(0).unwrap();
    let pi = peers.iter().position(|p| p.name == preferred.name).unwrap();
    let l = leader_of(&nodes, 0, Duration::from_secs(10)).await;
    nodes[l].replicas.propose(0, recs("a", 3)).await.unwrap();
    // The preferred replica goes; another leads.
    let at = nodes.iter().position(|n| n.name == preferred.name).unwrap();
    let dir = stop_node(nodes.remove(at)).await;
    let l = leader_of(&nodes, 0, Duration::from_secs(10)).await;
    let interim = nodes[l].replicas.leading(0).unwrap_or(0);
    let start = Instant::now();
    loop {
        if nodes[l].replicas.propose(0, recs("b", 3)).await.is_ok() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no commit without it"
        );
    }
    // It comes back: within a while it leads again, and takes writes.
    let listener = tokio::net::TcpListener::bind(&preferred.addr)
        .await
        .unwrap();
    let back = start_node(&peers, pi, listener, dir, log_config()).await;
    let start = Instant::now();
    // (A restarted leader believes in its old term until it hears of the
    // newer one: only a later term counts.)
    while back.replicas.leading(0).is_none_or(|t| t <= interim) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "leadership never went back to {}",
            preferred.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("leadership back after {:?}", start.elapsed());
    let start = Instant::now();
    loop {
        match back.replicas.propose(0, recs("c", 1)).await {
            Ok(_) => break,
            Err(e) => assert!(start.elapsed() < Duration::from_secs(10), "{e}"),
        }
    }
    assert_eq!(records_on(&back, 0, 7).await.len(), 7);
    back.replicas.shutdown().await;
    for n in &nodes {
        n.replicas.shutdown().await;
    }
}
