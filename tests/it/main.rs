//! Herald's integration tests, one binary: each module is one area,
//! against real parts (a real `redis-server` and Redis Cluster on free
//! ports, the real `herald` binary, real sockets, WebSocket clients and a
//! headless browser, network namespaces for partitions). `support` starts
//! them. Run one area with `cargo test -p herald --test it <module>::`.

// Test code: a panic with its message is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod auth;
mod celebrity;
mod chaos;
mod cluster;
mod cluster_kill;
mod cluster_members;
mod cluster_roles;
mod cluster_script;
mod data;
mod delivery;
mod demo;
mod devices;
mod digest;
mod faults;
mod faults_watch;
mod feed;
mod feed_pull;
mod front_door;
mod front_door_rules;
mod heartbeat;
mod inbox_lifetime;
mod ingest;
mod js_client;
mod kinds;
mod nemesis;
mod objects;
mod openapi;
mod preferences;
mod redis_cluster;
mod replication;
mod report;
mod restart;
mod slow_consumer;
mod smoke;
mod telemetry;
mod webhook;
