//! Hostile but well-formed requests, sent over raw sockets: each gets a
//! typed error or a bounded reply, costs bounded CPU and memory, and every
//! partition still takes writes afterwards.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use borges_net::batch::{Compression, RecordBatchBuilder};
use borges_net::protocol::*;
use borges_net::types::TopicId;
use borges_system_tests::{batch, Broker, RawConn};
use bytes::BytesMut;

/// A broker on one core with the settings of a TOML file.
fn broker_with(settings: &str, cores: usize) -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("borges.toml");
    std::fs::write(&config, settings).unwrap();
    let data = dir.path().join("data");
    let config_arg = config.to_string_lossy().to_string();
    let broker = Broker::start(&data, cores, &["--config", &config_arg]);
    (dir, broker)
}

/// `n` batches of `per` records of `size` bytes each to one partition.
fn fill(c: &mut RawConn, topic: TopicId, partition: u32, n: usize, per: usize, size: usize) {
    let value = "v".repeat(size);
    let values: Vec<&str> = (0..per).map(|_| value.as_str()).collect();
    for _ in 0..n {
        assert_eq!(c.produce(topic, partition, batch(&values)).error, ErrorCode::None);
    }
}

fn fetch_request(topic: TopicId, slots: &[(u32, i64)], max_wait_ms: u32, min_bytes: u32) -> FetchRequest {
    FetchRequest {
        max_wait_ms,
        min_bytes,
        max_bytes: u32::MAX,
        topics: vec![FetchTopic {
            topic_id: topic,
            partitions: slots
                .iter()
                .map(|&(partition, fetch_offset)| FetchPartition {
                    partition,
                    fetch_offset,
                    partition_max_bytes: u32::MAX,
                })
                .collect(),
        }],
    }
}

fn fetched_bytes(resp: &Response) -> usize {
    let Response::Fetch(r) = resp else {
        panic!("wrong response: {resp:?}")
    };
    r.topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| p.records.len())
        .sum()
}

/// Every partition of `topic` still takes a write.
fn all_take_writes(c: &mut RawConn, topic: TopicId, partitions: u32) {
    for p in 0..partitions {
        let r = c.produce(topic, p, batch(&["after"]));
        assert_eq!(
            r.error,
            ErrorCode::None,
            "partition {p} after the attack: {:?}",
            r.message
        );
    }
}

#[test]
fn a_fetch_naming_a_partition_many_times_is_refused_and_responses_are_bounded() {
    // 1 MiB per response at most (the first batch may go past it).
    let (_dir, mut broker) = broker_with("fetch_max_bytes = 1048576\n", 2);
    let mut c = RawConn::connect(broker.addr);
    let topic = c.create_topic("amplify", 4, &[]);
    for p in 0..4 {
        // 8 batches of 100 KB per partition: 800 KB each, 3.2 MB in all.
        fill(&mut c, topic, p, 8, 100, 1000);
    }

    // One partition named 8,192 times: refused as a whole, with a typed error.
    let slots: Vec<(u32, i64)> = (0..8192).map(|_| (0, 0)).collect();
    match c.call(Request::Fetch(fetch_request(topic, &slots, 0, 0))) {
        Err((code, msg)) => {
            assert_eq!(code, ErrorCode::InvalidRequest, "{msg}");
            println!("duplicate partitions: {code:?}: {msg}");
        }
        Ok(r) => panic!(
            "a fetch naming one partition 8192 times was served: {} bytes",
            fetched_bytes(&r)
        ),
    }

    // Every partition once, asking for 4 GiB each: at most fetch_max_bytes
    // plus one batch come back, though 3.2 MB are there.
    let all: Vec<(u32, i64)> = (0..4).map(|p| (p, 0)).collect();
    let resp = c.call(Request::Fetch(fetch_request(topic, &all, 0, 0))).unwrap();
    let got = fetched_bytes(&resp);
    println!("fetch of 4 partitions asking u32::MAX bytes each: {got} bytes (fetch_max_bytes 1048576)");
    assert!(got > 0, "the first partition returns data");
    assert!(
        got <= (1 << 20) + 110_000,
        "response {got} bytes exceeds fetch_max_bytes plus a batch"
    );

    // A client asking for less than a batch still gets one whole batch.
    let mut small = fetch_request(topic, &[(1, 0)], 0, 0);
    small.max_bytes = 10;
    let got = fetched_bytes(&c.call(Request::Fetch(small)).unwrap());
    assert!(got > 100_000 && got < 110_000, "one whole batch: {got}");

    all_take_writes(&mut c, topic, 4);
    assert!(broker.is_running());
    assert!(broker.terminate().success());
}

#[test]
fn a_long_poll_that_min_bytes_cannot_satisfy_sleeps_instead_of_spinning() {
    let (_dir, mut broker) = broker_with("fetch_max_wait_ms = 3000\n", 1);
    let mut c = RawConn::connect(broker.addr);
    let topic = c.create_topic("quiet", 1, &[]);
    fill(&mut c, topic, 0, 1, 10, 100);

    // 1 GiB wanted, a kilobyte there: waits out the 2 s, without spinning.
    let cpu0 = broker.cpu_time();
    let t0 = Instant::now();
    let resp = c
        .call(Request::Fetch(fetch_request(topic, &[(0, 0)], 2000, 1 << 30)))
        .unwrap();
    let (elapsed, cpu) = (t0.elapsed(), broker.cpu_time() - cpu0);
    println!("long poll with min_bytes 1 GiB: answered after {elapsed:?}, broker CPU {cpu:?}");
    assert!(
        fetched_bytes(&resp) > 0,
        "the data there comes back at the deadline"
    );
    assert!(
        elapsed >= Duration::from_millis(1900),
        "waited the max wait: {elapsed:?}"
    );
    assert!(cpu < Duration::from_millis(300), "the wait used {cpu:?} of CPU");

    // A max_wait_ms above fetch_max_wait_ms is cut to it.
    let t0 = Instant::now();
    let resp = c
        .call(Request::Fetch(fetch_request(topic, &[(0, 10)], 600_000, 1)))
        .unwrap();
    let waited = t0.elapsed();
    println!("max_wait_ms 600000 with fetch_max_wait_ms 3000: answered after {waited:?}");
    assert!(
        waited >= Duration::from_millis(2500) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert_eq!(fetched_bytes(&resp), 0);

    // New data wakes a waiting poll at once.
    let mut waiter = RawConn::connect(broker.addr);
    let handle = std::thread::spawn(move || {
        let t0 = Instant::now();
        let resp = waiter
            .call(Request::Fetch(fetch_request(topic, &[(0, 10)], 3000, 1)))
            .unwrap();
        (t0.elapsed(), fetched_bytes(&resp))
    });
    std::thread::sleep(Duration::from_millis(300));
    fill(&mut c, topic, 0, 1, 1, 100);
    let (woke_after, bytes) = handle.join().unwrap();
    println!("a waiting poll woke {woke_after:?} after it was sent, with {bytes} bytes");
    // It waited (nothing was there when it came) and the produce woke it,
    // long before its 3 s were out.
    assert!(
        bytes > 0 && woke_after >= Duration::from_millis(250) && woke_after < Duration::from_millis(2500)
    );
    assert!(broker.terminate().success());
}

#[test]
fn metadata_describes_a_topic_once_however_often_it_is_named() {
    let (_dir, mut broker) = broker_with("", 1);
    let mut c = RawConn::connect(broker.addr);
    c.create_topic("t", 4, &[]);
    let names: Vec<String> = (0..100_000).map(|_| "t".to_string()).collect();
    let resp = c
        .call(Request::Metadata(MetadataRequest { topics: Some(names) }))
        .unwrap();
    let Response::Metadata(m) = resp else { panic!() };
    println!(
        "metadata naming one topic 100000 times: {} topic entries",
        m.topics.len()
    );
    assert_eq!(m.topics.len(), 1);
    assert_eq!(m.topics[0].partitions.len(), 4);
    assert!(broker.terminate().success());
}

/// Whether the broker answers ApiVersions on `c` (false: it closed it).
fn answers_api_versions(c: &mut RawConn) -> bool {
    let mut out = BytesMut::new();
    let header = RequestHeader {
        api_key: ApiKey::ApiVersions,
        api_version: 0,
        correlation_id: 0,
        client_id: "probe".into(),
    };
    encode_request(&header, &Request::ApiVersions(ApiVersionsRequest {}), &mut out);
    c.send_raw(&out).is_ok() && c.read_response(ApiKey::ApiVersions).is_some()
}

#[test]
fn a_closed_connection_ends_its_long_polls_and_frees_its_place() {
    // Two connections per shard: one stays, the other place is reused.
    let (_dir, mut broker) = broker_with("max_connections_per_shard = 2\n", 1);
    let mut keep = RawConn::connect(broker.addr);
    let topic = keep.create_topic("polls", 1, &[]);
    let t0 = Instant::now();
    for i in 0..20 {
        // A long poll (30 s) and away: the place must come back at once.
        let mut served = false;
        for _ in 0..200 {
            let mut c = RawConn::connect(broker.addr);
            // Accepted and served, or refused (closed) for want of a place.
            if !answers_api_versions(&mut c) {
                continue;
            }
            let mut out = BytesMut::new();
            let header = RequestHeader {
                api_key: ApiKey::Fetch,
                api_version: 0,
                correlation_id: 1,
                client_id: "poller".into(),
            };
            encode_request(
                &header,
                &Request::Fetch(fetch_request(topic, &[(0, 0)], 30_000, 1)),
                &mut out,
            );
            c.send_raw(&out).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            served = true;
            break;
        }
        assert!(served, "connection {i} was never accepted");
    }
    let elapsed = t0.elapsed();
    println!("20 connections, each leaving a 30 s long poll behind, served in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    all_take_writes(&mut keep, topic, 1);
    assert!(broker.terminate().success());
}

/// A zstd batch of one record of `n` zeros: a few hundred bytes.
fn zero_bomb(n: usize) -> BytesMut {
    let mut b = RecordBatchBuilder::new(Compression::Zstd);
    b.push(1, None, Some(&vec![0u8; n]), &[]);
    b.build().unwrap()
}

#[test]
fn recompression_of_a_compression_bomb_is_refused() {
    let (_dir, mut broker) = broker_with("recompress_max_bytes = 16777216\n", 1);
    let mut c = RawConn::connect(broker.addr);
    let topic = c.create_topic("lz4-only", 1, &[("compression.type", "lz4")]);
    // 64 batches that expand to 8 MiB each: 512 MiB for a request of a few KB.
    let mut bomb = BytesMut::new();
    for _ in 0..64 {
        bomb.extend_from_slice(&zero_bomb(8 << 20));
    }
    println!("bomb: {} bytes expanding to 512 MiB", bomb.len());
    let rss0 = broker.rss_bytes();
    let t0 = Instant::now();
    let r = c.produce(topic, 0, bomb);
    println!(
        "recompression bomb: {:?} after {:?}, broker RSS {} -> {} MiB",
        r.error,
        t0.elapsed(),
        rss0 >> 20,
        broker.rss_bytes() >> 20
    );
    assert_eq!(r.error, ErrorCode::MessageTooLarge, "{:?}", r.message);
    assert!(broker.rss_bytes() < rss0 + (200 << 20));
    // Within the budget: recompressed and stored.
    assert_eq!(c.produce(topic, 0, zero_bomb(1 << 20)).error, ErrorCode::None);
    all_take_writes(&mut c, topic, 1);
    assert!(broker.terminate().success());
}

/// The recompression budget is the request's, not each partition's: one
/// produce naming 24 partitions, each two batches that expand to 10 MiB
/// each, may decompress 64 MiB in all. Recompressions run one at a time on
/// a shard, so the shard keeps turning between partitions. A partition
/// named twice is refused, whole, before anything is written.
#[test]
fn recompression_is_bounded_per_request_and_duplicates_are_refused() {
    let (_dir, mut broker) = broker_with("recompress_max_bytes = 67108864\n", 1);
    let mut c = RawConn::connect(broker.addr);
    let topic = c.create_topic("lz4-only", 24, &[("compression.type", "lz4")]);
    let partitions: Vec<ProducePartition> = (0..24)
        .map(|partition| {
            let mut records = zero_bomb(10 << 20);
            records.extend_from_slice(&zero_bomb(10 << 20));
            ProducePartition { partition, records }
        })
        .collect();
    let produce = |partitions: Vec<ProducePartition>| {
        Request::Produce(ProduceRequest {
            acks: -1,
            timeout_ms: 10_000,
            topics: vec![ProduceTopic {
                topic_id: topic,
                partitions,
            }],
        })
    };
    let t0 = Instant::now();
    let Ok(Response::Produce(r)) = c.call(produce(partitions)) else {
        panic!("produce refused")
    };
    let parts = &r.topics[0].partitions;
    let stored = parts.iter().filter(|p| p.error == ErrorCode::None).count();
    let too_large = parts
        .iter()
        .filter(|p| p.error == ErrorCode::MessageTooLarge)
        .count();
    println!(
        "24 partitions of 2 x 10 MiB to recompress, 64 MiB for the request: {stored} stored, \
         {too_large} refused, in {:?}",
        t0.elapsed()
    );
    // Three partitions fit 64 MiB; the fourth runs out in its first batch.
    assert_eq!((stored, too_large), (3, 21));

    // Partition 3 twice: refused whole, nothing written anywhere.
    let twice = vec![
        ProducePartition {
            partition: 3,
            records: batch(&["a"]),
        },
        ProducePartition {
            partition: 5,
            records: batch(&["b"]),
        },
        ProducePartition {
            partition: 3,
            records: batch(&["c"]),
        },
    ];
    let r = c.call(produce(twice));
    assert!(matches!(&r, Err((ErrorCode::InvalidRequest, _))), "{r:?}");
    // Nothing of it was written: the next write to each lands where the
    // refused recompressions left the log end.
    for p in [3, 5] {
        let r = c.produce(topic, p, batch(&["after"]));
        assert_eq!((r.error, r.base_offset), (ErrorCode::None, 0), "partition {p}");
    }
    assert!(broker.terminate().success());
}

#[test]
fn announced_frames_take_no_memory_before_their_permits() {
    // 100 MiB frames, 256 MiB for the shard: two announced frames at a time.
    let (_dir, mut broker) = broker_with(
        "max_frame_bytes = 104857600\nmax_inflight_bytes_per_connection = 134217728\nmax_inflight_bytes_per_shard = 268435456\n",
        1,
    );
    let mut c = RawConn::connect(broker.addr);
    let topic = c.create_topic("budget", 1, &[]);
    let rss0 = broker.rss_bytes();
    // 20 connections each announce a 100 MiB frame and send 8 bytes of it.
    let mut liars = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(broker.addr).unwrap();
        s.write_all(&(100u32 << 20).to_be_bytes()).unwrap();
        s.write_all(&[0u8; 8]).unwrap();
        liars.push(s);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let rss = broker.rss_bytes();
    println!(
        "20 connections announcing 100 MiB frames: broker RSS {} -> {} MiB",
        rss0 >> 20,
        rss >> 20
    );
    assert!(rss < rss0 + (400 << 20), "RSS grew by {} MiB", (rss - rss0) >> 20);
    drop(liars);
    // What the liars held (little) is given back before the next baseline.
    std::thread::sleep(Duration::from_millis(500));

    // Many small produces, each read alone: the tail cache must not pin a
    // read buffer per batch.
    let rss0 = broker.rss_bytes();
    for i in 0..4000 {
        let v = format!("record {i}");
        assert_eq!(c.produce(topic, 0, batch(&[&v])).error, ErrorCode::None);
    }
    let rss = broker.rss_bytes();
    println!(
        "4000 single-record produces: broker RSS {} -> {} MiB",
        rss0 >> 20,
        rss >> 20
    );
    assert!(rss < rss0 + (64 << 20), "RSS grew by {} MiB", (rss - rss0) >> 20);
    assert!(broker.terminate().success());
}

#[test]
fn a_client_that_stops_reading_is_cut_off_and_others_go_on() {
    let (_dir, mut broker) = broker_with(
        "write_timeout_ms = 1000\nmax_unwritten_bytes_per_connection = 4194304\nfetch_max_bytes = 4194304\n",
        1,
    );
    let mut c = RawConn::connect(broker.addr);
    let topic = c.create_topic("big", 1, &[]);
    fill(&mut c, topic, 0, 40, 100, 1000); // 4 MB

    // A client asks for the partition 200 times and never reads.
    let mut stalled = TcpStream::connect(broker.addr).unwrap();
    let mut out = BytesMut::new();
    for i in 0..200 {
        let header = RequestHeader {
            api_key: ApiKey::Fetch,
            api_version: 0,
            correlation_id: i,
            client_id: "stalled".into(),
        };
        encode_request(
            &header,
            &Request::Fetch(fetch_request(topic, &[(0, 0)], 0, 0)),
            &mut out,
        );
    }
    stalled.write_all(&out).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Others are served meanwhile.
    all_take_writes(&mut c, topic, 1);
    // After the write timeout the broker drops it: reading on finds the end
    // of the stream long before 200 responses of 4 MB.
    std::thread::sleep(Duration::from_millis(2000));
    stalled.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let t0 = Instant::now();
    loop {
        match stalled.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "still being served");
    }
    println!(
        "stalled reader: cut off after {} MiB of {} MiB asked",
        got >> 20,
        (200 * 4_000_000) >> 20
    );
    assert!(got < 100 << 20, "{got} bytes");
    all_take_writes(&mut c, topic, 1);
    assert!(broker.terminate().success());
}

/// A client cut off for not reading gives back every byte of budget its
/// requests held: those queued for its writer, those waiting to be queued,
/// and its reader waiting for more. Here the shard's whole budget fits one
/// connection's, so two such clients left anything stranded, the good
/// client's next request would wait for ever.
#[test]
fn a_client_cut_off_for_not_reading_gives_its_budget_back() {
    let (_dir, mut broker) = broker_with(
        "write_timeout_ms = 300\nmax_frame_bytes = 65536\n\
         max_inflight_bytes_per_connection = 65540\nmax_inflight_bytes_per_shard = 65540\n\
         max_unwritten_bytes_per_connection = 1073741824\n",
        1,
    );
    let mut c = RawConn::connect(broker.addr);
    let topic = c.create_topic("big", 1, &[]);
    fill(&mut c, topic, 0, 100, 40, 1000); // 4 MB
                                           // Each answered with 64 KiB: many responses, so that the writer's
                                           // queue fills and handlers wait to hand theirs over.
    let mut fetch = fetch_request(topic, &[(0, 0)], 0, 0);
    fetch.max_bytes = 65536;
    fetch.topics[0].partitions[0].partition_max_bytes = 65536;
    for round in 0..2 {
        // 2,000 fetches of the whole partition, sent and never read: far
        // more than its budget lets in, and more than its writer queues.
        let mut stalled = TcpStream::connect(broker.addr).unwrap();
        let mut out = BytesMut::new();
        for i in 0..2000 {
            let header = RequestHeader {
                api_key: ApiKey::Fetch,
                api_version: 0,
                correlation_id: i,
                client_id: "stalled".into(),
            };
            encode_request(&header, &Request::Fetch(fetch.clone()), &mut out);
        }
        stalled.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = stalled.write_all(&out);
        // Cut off after the write timeout (300 ms); the stalled client
        // stays connected, reading nothing.
        std::thread::sleep(Duration::from_secs(2));
        // The good client is served at once (or waits for ever: its read
        // times out after 20 s and the test fails).
        let t = Instant::now();
        all_take_writes(&mut c, topic, 1);
        println!(
            "round {round}: good client served in {:?} after the cut-off",
            t.elapsed()
        );
        drop(stalled);
    }
    assert!(broker.terminate().success());
}

/// A frame holds its permits from its length prefix on, so it must arrive
/// whole in bounded time: a client trickling a byte at a time is cut off,
/// and the budget it held serves others.
#[test]
fn a_frame_trickled_byte_by_byte_is_cut_off() {
    let (_dir, mut broker) = broker_with(
        "request_read_timeout_ms = 500\nmax_frame_bytes = 1048576\n\
         max_inflight_bytes_per_connection = 1048580\nmax_inflight_bytes_per_shard = 1048580\n",
        1,
    );
    let mut c = RawConn::connect(broker.addr);
    let topic = c.create_topic("t", 1, &[]);
    // Announces a frame of the whole shard budget, then a byte per 100 ms
    // (each byte would reset an idle timeout).
    let mut slow = TcpStream::connect(broker.addr).unwrap();
    slow.write_all(&((1u32 << 20) - 4).to_be_bytes()).unwrap();
    let t0 = Instant::now();
    let mut cut_after = None;
    while t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        if slow.write_all(&[0]).is_err() {
            cut_after = Some(t0.elapsed());
            break;
        }
    }
    // A write may still succeed once after the close: ask the socket too.
    let mut b = [0u8; 1];
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let closed = matches!(slow.read(&mut b), Ok(0) | Err(_));
    println!(
        "trickling client: cut off after {:?} (deadline 0.5 s + 1 s per MiB)",
        cut_after.unwrap_or(t0.elapsed())
    );
    assert!(
        closed && t0.elapsed() < Duration::from_secs(8),
        "the trickling client is still connected"
    );
    // The shard's whole budget is back.
    all_take_writes(&mut c, topic, 1);
    assert!(broker.terminate().success());
}

/// Requests in flight on one connection are bounded by count as well as
/// by bytes: with room for 4, a fifth request waits for one of four long
/// polls to end.
#[test]
fn requests_in_flight_per_connection_are_bounded_by_count() {
    let (_dir, mut broker) = broker_with("max_inflight_requests_per_connection = 4\n", 1);
    let mut c = RawConn::connect(broker.addr);
    let topic = c.create_topic("t", 1, &[]);
    let mut out = BytesMut::new();
    for i in 0..4 {
        let header = RequestHeader {
            api_key: ApiKey::Fetch,
            api_version: 0,
            correlation_id: 100 + i,
            client_id: "polls".into(),
        };
        encode_request(
            &header,
            &Request::Fetch(fetch_request(topic, &[(0, 0)], 1500, 1)),
            &mut out,
        );
    }
    let header = RequestHeader {
        api_key: ApiKey::ApiVersions,
        api_version: 0,
        correlation_id: 200,
        client_id: "polls".into(),
    };
    encode_request(&header, &Request::ApiVersions(ApiVersionsRequest {}), &mut out);
    let t0 = Instant::now();
    c.send_raw(&out).unwrap();
    // The four polls come back empty after 1.5 s; ApiVersions only once
    // one of them has (responses leave in any order).
    let mut waited = None;
    for _ in 0..5 {
        let frame = c.read_frame().expect("a response");
        let corr = u32::from_be_bytes(frame[..4].try_into().unwrap());
        if corr == 200 {
            waited = Some(t0.elapsed());
        } else {
            assert!((100..104).contains(&corr), "{corr}");
        }
    }
    let waited = waited.expect("ApiVersions answered");
    println!("fifth request answered after {waited:?} (four long polls of 1.5 s ahead of it)");
    assert!(
        waited >= Duration::from_millis(1400),
        "answered after {waited:?}: not bounded"
    );
    assert!(broker.terminate().success());
}

/// An idle connection costs little memory: 2,000 connections that each
/// sent a request and then wait.
#[test]
fn idle_connections_hold_little_memory() {
    let (_dir, mut broker) = broker_with("", 1);
    let rss0 = broker.rss_bytes();
    let mut conns = Vec::new();
    for _ in 0..2000 {
        let mut c = RawConn::connect(broker.addr);
        assert!(answers_api_versions(&mut c));
        conns.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss = broker.rss_bytes();
    let per = rss.saturating_sub(rss0) / 2000;
    println!(
        "2000 idle connections: broker RSS {} -> {} MiB, {} KiB each",
        rss0 >> 20,
        rss >> 20,
        per >> 10
    );
    assert!(per < 24 << 10, "{per} bytes per idle connection");
    drop(conns);
    assert!(broker.terminate().success());
}

#[test]
fn an_idle_connection_is_closed() {
    let (_dir, mut broker) = broker_with("connection_idle_timeout_ms = 500\nfetch_max_wait_ms = 500\n", 1);
    let mut c = RawConn::connect(broker.addr);
    assert!(c.call(Request::ApiVersions(ApiVersionsRequest {})).is_ok());
    assert!(
        c.is_closed_within(Duration::from_secs(5)),
        "idle connection kept open"
    );
    let mut d = RawConn::connect(broker.addr);
    assert!(d.call(Request::ApiVersions(ApiVersionsRequest {})).is_ok());
    assert!(broker.terminate().success());
}

#[test]
fn budgets_that_cannot_hold_the_largest_frame_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("borges.toml");
    std::fs::write(
        &config,
        "max_frame_bytes = 1048576\nmax_inflight_bytes_per_connection = 1048576\n",
    )
    .unwrap();
    let out = std::process::Command::new(borges_system_tests::borges_bin())
        .args(["start", "--listen", "127.0.0.1:0", "--cores", "1", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    println!("refused: {}", err.trim());
    assert!(!out.status.success());
    assert!(err.contains("max_inflight_bytes_per_connection"), "{err}");
}

#[test]
fn a_shard_that_panics_stops_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(borges_system_tests::borges_bin())
        .args(["start", "--listen", "127.0.0.1:0", "--cores", "2"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("BORGES_FAULT_PANIC_SHARD", "1")
        .env("BORGES_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the broker runs on with a dead shard");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    println!(
        "broker with a panicked shard exited after {:?}: {status}",
        t0.elapsed()
    );
    // A clean exit with an error (1), not a signal or an abort.
    assert_eq!(status.code(), Some(1), "{status}");
    // Its data directory is intact: a normal start serves it.
    let mut broker = Broker::start(dir.path(), 2, &[]);
    let mut c = RawConn::connect(broker.addr);
    let topic = c.create_topic("after", 2, &[]);
    all_take_writes(&mut c, topic, 2);
    assert!(broker.terminate().success());
}
