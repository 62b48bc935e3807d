//! Issue 20's client faults against real broker processes (see
//! `common/mod.rs`): one test per finding, named after it. Each starts its
//! own broker and is bounded by `tokio::time::timeout`.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use borges_client::{
    AutoOffsetReset, Client, ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, Producer,
    ProducerConfig, ProducerRecord,
};
use common::Broker;

/// Counts the bytes this test process has allocated and not freed, for
/// `buffer_memory_bounds_allocation`.
struct Counting;

static ALLOCATED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only a
// counter is updated besides.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) };
        ALLOCATED.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { std::alloc::System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            ALLOCATED.fetch_add(new_size, std::sync::atomic::Ordering::Relaxed);
            ALLOCATED.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Runs a test body under a time bound.
async fn bounded<F: Future<Output = ()>>(secs: u64, f: F) {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("the test took longer than {secs} s"));
}

async fn connect(addr: &str) -> Client {
    Client::connect(addr, ClientConfig::default())
        .await
        .expect("connect to the broker")
}

/// Reads `topic`/`partition` from the earliest offset until `expected`
/// records arrived; fails if none come for 10 s.
async fn consume(client: &Client, topic: &str, partition: u32, expected: usize) -> Vec<ConsumerRecord> {
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            auto_offset_reset: AutoOffsetReset::Earliest,
            fetch_max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        },
    );
    consumer.assign([(topic.to_string(), partition)]);
    let mut out = Vec::new();
    let mut idle = 0;
    while out.len() < expected {
        let batch = consumer.poll(Duration::from_secs(1)).await.expect("poll");
        if batch.is_empty() {
            idle += 1;
            assert!(idle < 10, "no records for 10 s; have {} of {expected}", out.len());
        }
        out.extend(batch);
    }
    out
}

/// Finding 4: retries are bounded by `delivery_timeout` (120 s by default),
/// not by a count that a broker restart outlasts. The broker is down while
/// 100 records are sent and comes back 10 s later: every one is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_timed_not_counted() {
    let mut broker = Broker::start();
    let addr = broker.addr().to_string();
    bounded(120, async move {
        let client = connect(&addr).await;
        client
            .admin()
            .create_topic("t4", 1, 1, &[])
            .await
            .expect("create");
        let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
        producer
            .send(ProducerRecord::new("t4").value("before"))
            .await
            .expect("enqueue")
            .await
            .expect("delivered while the broker runs");

        broker.kill();
        let down_at = Instant::now();
        let restarter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(10));
            broker.restart();
            broker
        });
        let mut futures = Vec::new();
        for i in 0..100 {
            let rec = ProducerRecord::new("t4").value(format!("v{i}"));
            futures.push(
                producer
                    .send(rec)
                    .await
                    .expect("enqueue while the broker is down"),
            );
        }
        for (i, f) in futures.into_iter().enumerate() {
            let m = f.await.unwrap_or_else(|e| panic!("record {i} failed: {e}"));
            assert!(m.offset >= 1, "record {i} at offset {}", m.offset);
        }
        assert!(
            down_at.elapsed() >= Duration::from_secs(10),
            "delivered while the broker was down?"
        );
        let broker = tokio::task::spawn_blocking(move || restarter.join().expect("restart"))
            .await
            .unwrap();
        let records = consume(&client, "t4", 0, 101).await;
        let values: Vec<String> = records
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
            .collect();
        let mut expected = vec!["before".to_string()];
        expected.extend((0..100).map(|i| format!("v{i}")));
        assert_eq!(values, expected, "each record once, in order");
        drop(broker);
    })
    .await;
}

/// Finding 7: `send` waits up to `max_block` for metadata it cannot get
/// now (the broker restarting) instead of failing at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_blocks_for_metadata_within_max_block() {
    let mut broker = Broker::start();
    let addr = broker.addr().to_string();
    bounded(90, async move {
        let client = connect(&addr).await;
        client
            .admin()
            .create_topic("t7", 1, 1, &[])
            .await
            .expect("create");
        client.invalidate_topic("t7");
        let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
        broker.kill();
        let restarter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(3));
            broker.restart();
            broker
        });
        let started = Instant::now();
        let delivery = producer
            .send(ProducerRecord::new("t7").value("after"))
            .await
            .expect("send waits for the metadata instead of failing");
        assert!(started.elapsed() >= Duration::from_secs(2), "the broker was down");
        let m = delivery.await.expect("delivered");
        assert_eq!(m.offset, 0);
        let broker = tokio::task::spawn_blocking(move || restarter.join().expect("restart"))
            .await
            .unwrap();

        // And a topic that never becomes available fails after max_block.
        let short = Producer::new(
            client.clone(),
            ProducerConfig {
                max_block: Duration::from_secs(2),
                ..ProducerConfig::default()
            },
        )
        .unwrap();
        drop(broker);
        let started = Instant::now();
        let e = short
            .send(ProducerRecord::new("t7-other").value("x"))
            .await
            .expect_err("no broker: no metadata");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "failed after {:?}: {e}",
            started.elapsed()
        );
    })
    .await;
}

/// A TCP proxy in front of a broker that can black-hole every flow open
/// now (bytes read and dropped, nothing closed, like a dead route) while
/// new flows pass.
struct Proxy {
    addr: String,
    /// Flows accepted before the latest `black_hole` call are silent.
    era: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    /// Listens on a free port; forwards to `upstream` once it is set.
    async fn listen() -> (Proxy, tokio::net::TcpListener) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap().to_string();
        (
            Proxy {
                addr,
                era: Default::default(),
            },
            listener,
        )
    }

    fn serve(&self, listener: tokio::net::TcpListener, upstream: String) {
        let era = self.era.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let mine = era.load(std::sync::atomic::Ordering::SeqCst);
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, era.clone(), mine));
                tokio::spawn(pump(ro, wi, era.clone(), mine));
            }
        });
    }

    fn black_hole(&self) {
        self.era.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    era: std::sync::Arc<std::sync::atomic::AtomicU64>,
    mine: u64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if era.load(std::sync::atomic::Ordering::SeqCst) != mine {
            continue; // black-holed: swallowed, and the flow stays open
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Finding 3: a request that times out closes its connection, so the retry
/// goes over a new one, and the disconnect refreshes metadata. Every flow
/// to the broker is black-holed after the first record: the second is
/// delivered over a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_connection_is_replaced() {
    let (proxy, listener) = Proxy::listen().await;
    let broker = Broker::start_with(&["--advertised", &proxy.addr]);
    proxy.serve(listener, broker.addr().to_string());
    bounded(60, async {
        let client = Client::connect(
            &proxy.addr,
            ClientConfig {
                request_timeout: Duration::from_secs(2),
                ..ClientConfig::default()
            },
        )
        .await
        .expect("connect through the proxy");
        assert_eq!(
            client.brokers()[0].port.to_string(),
            proxy.addr.rsplit(':').next().unwrap()
        );
        client
            .admin()
            .create_topic("t3", 1, 1, &[])
            .await
            .expect("create");
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                request_timeout: Duration::from_secs(2),
                ..ProducerConfig::default()
            },
        )
        .unwrap();
        producer
            .send(ProducerRecord::new("t3").value("one"))
            .await
            .expect("enqueue")
            .await
            .expect("delivered");
        proxy.black_hole();
        let started = Instant::now();
        let delivery = producer
            .send(ProducerRecord::new("t3").value("two"))
            .await
            .expect("enqueue");
        let m = tokio::time::timeout(Duration::from_secs(20), delivery)
            .await
            .expect("delivered within 20 s of the black hole (a timeout and a new connection)")
            .expect("delivered");
        // Retried after a timeout: "two" may be in the log twice (no
        // idempotence yet), but it is there.
        assert!(m.offset >= 1);
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "the first attempt timed out"
        );
        let records = consume(&client, "t3", 0, 2).await;
        assert_eq!(records[0].value.as_deref(), Some(&b"one"[..]));
        assert_eq!(records[1].value.as_deref(), Some(&b"two"[..]));
    })
    .await;
}

/// Finding 2: a record near the buffer's size neither waits forever for
/// credit parked by earlier sends nor blocks the sends after it; one that
/// can never fit is refused at once with a typed error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_record_does_not_freeze_producer() {
    let broker = Broker::start();
    bounded(60, async {
        let client = connect(broker.addr()).await;
        client
            .admin()
            .create_topic("t2", 1, 1, &[])
            .await
            .expect("create");
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                buffer_memory_bytes: 1 << 20,
                ..ProducerConfig::default()
            },
        )
        .unwrap();
        let small = producer
            .send(ProducerRecord::new("t2").value(vec![1u8; 100]))
            .await
            .expect("enqueue");
        let big = tokio::time::timeout(
            Duration::from_secs(5),
            producer.send(ProducerRecord::new("t2").value(vec![2u8; 900 << 10])),
        )
        .await
        .expect("a 900 KiB send into a 1 MiB buffer returns within 5 s")
        .expect("it fits the buffer");
        let other = producer.clone();
        let concurrent = tokio::time::timeout(Duration::from_secs(5), async move {
            other
                .send(ProducerRecord::new("t2").value(vec![3u8; 100]))
                .await
                .expect("enqueue")
                .await
        })
        .await
        .expect("a small send after the big one completes within 5 s")
        .expect("delivered");
        small.await.expect("small delivered");
        let big = big.await.expect("big delivered");
        assert_eq!(big.offset, 1);
        assert_eq!(concurrent.offset, 2);

        let e = producer
            .send(ProducerRecord::new("t2").value(vec![4u8; 2 << 20]))
            .await
            .expect_err("larger than the buffer");
        assert!(
            matches!(e, borges_client::ClientError::RecordTooLarge { .. }),
            "{e}"
        );
    })
    .await;
}

/// Finding 6: `flush` waits for the records sent before it, not for every
/// sender to go quiet: another task sends without pause, and a flush of
/// one record returns within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_ignores_later_sends() {
    let broker = Broker::start();
    bounded(60, async {
        let client = connect(broker.addr()).await;
        client
            .admin()
            .create_topic("t6", 2, 1, &[])
            .await
            .expect("create");
        // A small buffer that the other task keeps full: records are
        // pending at every moment, but few are ahead of the flushed one.
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                buffer_memory_bytes: 256 << 10,
                batch_size_bytes: 16 << 10,
                ..ProducerConfig::default()
            },
        )
        .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy = {
            let producer = producer.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let rec = ProducerRecord::new("t6").partition(0).value(format!("busy{n}"));
                    producer.send(rec).await.expect("enqueue");
                    n += 1;
                }
                n
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Twenty times: a flush that waited for the other task to go quiet
        // could still return when its records happen to be all acknowledged
        // for a moment; twenty such moments in a row do not happen.
        let mut busy_rounds = 0;
        for round in 0..20 {
            if producer.pending_records() > 0 {
                busy_rounds += 1;
            }
            let mine = producer
                .send(
                    ProducerRecord::new("t6")
                        .partition(1)
                        .value(format!("mine{round}")),
                )
                .await
                .expect("enqueue");
            let started = Instant::now();
            tokio::time::timeout(Duration::from_secs(1), producer.flush())
                .await
                .unwrap_or_else(|_| {
                    panic!("round {round}: flush returns within 1 s while another task keeps sending")
                });
            assert!(started.elapsed() < Duration::from_secs(1));
            // Flushed means settled.
            let m = tokio::time::timeout(Duration::from_millis(10), mine)
                .await
                .expect("settled by the flush")
                .expect("delivered");
            assert_eq!(m.offset, round);
        }
        // The other task's records were pending when most flushes began
        // (not every time: it may be between sends, everything acknowledged).
        assert!(
            busy_rounds >= 10,
            "records pending at only {busy_rounds} of 20 flushes"
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = busy.await.unwrap();
        assert!(sent > 10, "the other task kept sending ({sent})");
        tokio::time::timeout(Duration::from_secs(10), producer.close())
            .await
            .expect("close returns once the senders stopped");
    })
    .await;
}

/// Finding 1: records `poll` has taken are returned even when starting the
/// next fetches fails (a deleted topic) or the `poll` future is dropped.
/// a/0 and b/0 are assigned, b is deleted while a's records are buffered:
/// a's offsets come out contiguous and its position follows the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_error_keeps_taken_records() {
    let broker = Broker::start();
    bounded(90, async {
        let client = connect(broker.addr()).await;
        let admin = client.admin();
        admin.create_topic("a", 1, 1, &[]).await.expect("create a");
        admin.create_topic("b", 1, 1, &[]).await.expect("create b");
        let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
        const HALF: i64 = 500;
        for i in 0..HALF {
            producer
                .send(ProducerRecord::new("a").value(format!("a{i}")))
                .await
                .expect("enqueue");
        }
        producer.flush().await;

        let mut consumer = Consumer::new(
            client.clone(),
            ConsumerConfig {
                auto_offset_reset: AutoOffsetReset::Earliest,
                max_poll_records: 10,
                fetch_max_wait: Duration::from_millis(100),
                ..ConsumerConfig::default()
            },
        );
        consumer.assign([("a".to_string(), 0), ("b".to_string(), 0)]);
        let mut a_offsets: Vec<i64> = Vec::new();
        let mut errors = 0;
        let mut later: Option<tokio::task::JoinHandle<()>> = None;
        let mut round = 0u64;
        let started = Instant::now();
        while (a_offsets.len() as i64) < 2 * HALF {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "only {} of a's {} records in 60 s ({errors} errors)",
                a_offsets.len(),
                2 * HALF
            );
            round += 1;
            // Every third poll is dropped after 1 ms, mid-wait if it waits.
            let got = if round % 3 == 0 {
                match tokio::time::timeout(Duration::from_millis(1), consumer.poll(Duration::from_secs(1)))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => continue,
                }
            } else {
                consumer.poll(Duration::from_secs(1)).await
            };
            match got {
                Ok(records) => {
                    a_offsets.extend(records.iter().filter(|r| &*r.topic == "a").map(|r| r.offset));
                }
                Err(_) => errors += 1,
            }
            if later.is_none() && !a_offsets.is_empty() {
                // b goes away; a's second half trickles in after it, so
                // that its records arrive while b's fetches fail.
                admin.delete_topic("b").await.expect("delete b");
                let producer = producer.clone();
                later = Some(tokio::spawn(async move {
                    for i in HALF..2 * HALF {
                        let d = producer
                            .send(ProducerRecord::new("a").value(format!("a{i}")))
                            .await
                            .expect("enqueue");
                        if i % 10 == 9 {
                            d.await.expect("delivered");
                        }
                    }
                }));
            }
        }
        later.unwrap().await.unwrap();
        let expected: Vec<i64> = (0..2 * HALF).collect();
        assert_eq!(
            a_offsets, expected,
            "a's offsets contiguous from 0 ({errors} errors)"
        );
        assert!(errors > 0, "b's deletion was reported");
        assert_eq!(consumer.position("a", 0).await.expect("position"), 2 * HALF);
    })
    .await;
}

/// Finding 9: a topic deleted and re-created under the same name is a new
/// log: the consumer does not fetch the old position from it, but resets
/// by `auto_offset_reset` and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreated_topic_resets_position() {
    let broker = Broker::start();
    bounded(60, async {
        let client = connect(broker.addr()).await;
        let other = connect(broker.addr()).await;
        client
            .admin()
            .create_topic("t9", 1, 1, &[])
            .await
            .expect("create");
        let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
        for i in 0..10 {
            producer
                .send(ProducerRecord::new("t9").value(format!("old{i}")))
                .await
                .expect("enqueue");
        }
        producer.flush().await;
        let mut consumer = Consumer::new(
            client.clone(),
            ConsumerConfig {
                auto_offset_reset: AutoOffsetReset::Earliest,
                fetch_max_wait: Duration::from_millis(100),
                ..ConsumerConfig::default()
            },
        );
        consumer.assign([("t9".to_string(), 0)]);
        let mut old = Vec::new();
        while old.len() < 10 {
            old.extend(consumer.poll(Duration::from_secs(1)).await.expect("poll"));
        }
        assert_eq!(consumer.position("t9", 0).await.unwrap(), 10);

        other.admin().delete_topic("t9").await.expect("delete");
        other
            .admin()
            .create_topic("t9", 1, 1, &[])
            .await
            .expect("re-create");
        let fresh = Producer::new(other.clone(), ProducerConfig::default()).unwrap();
        for i in 0..15 {
            fresh
                .send(ProducerRecord::new("t9").value(format!("new{i}")))
                .await
                .expect("enqueue");
        }
        fresh.flush().await;

        let mut values = Vec::new();
        let mut told = false;
        let started = Instant::now();
        while values.len() < 15 {
            assert!(started.elapsed() < Duration::from_secs(30), "have {values:?}");
            match consumer.poll(Duration::from_millis(500)).await {
                Ok(records) => values.extend(
                    records
                        .iter()
                        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap()),
                ),
                Err(borges_client::ClientError::TopicRecreated { topic, position, .. }) => {
                    assert_eq!((topic.as_str(), position), ("t9", 10));
                    told = true;
                }
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        let expected: Vec<String> = (0..15).map(|i| format!("new{i}")).collect();
        assert_eq!(values, expected, "the new topic from its start");
        assert!(told, "the application heard of the re-creation");
    })
    .await;
}

/// `borges produce --brokers ADDR TOPIC`, its stdin piped.
fn borges_produce(addr: &str, topic: &str) -> std::process::Child {
    std::process::Command::new(borges_system_tests::borges_bin())
        .args(["produce", "--brokers", addr, topic])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run borges produce")
}

/// Finding 8: `borges produce` reads stdin off its runtime, so a line is
/// sent within `linger` of arriving even while the pipe stays open (as
/// with `tail -f | borges produce`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_produce_sends_lines_while_stdin_is_open() {
    use std::io::Write;
    let broker = Broker::start();
    bounded(60, async {
        let client = connect(broker.addr()).await;
        client
            .admin()
            .create_topic("t8", 1, 1, &[])
            .await
            .expect("create");
        let mut child = borges_produce(broker.addr(), "t8");
        let mut stdin = child.stdin.take().unwrap();
        for i in 0..5 {
            writeln!(stdin, "line{i}").unwrap();
        }
        stdin.flush().unwrap();
        // The pipe stays open: the consumer must see all five anyway.
        let seen = tokio::time::timeout(Duration::from_secs(3), consume(&client, "t8", 0, 5))
            .await
            .expect("all five lines consumed within 3 s, stdin still open");
        let values: Vec<&[u8]> = seen.iter().map(|r| r.value.as_deref().unwrap()).collect();
        assert_eq!(values, [&b"line0"[..], b"line1", b"line2", b"line3", b"line4"]);
        drop(stdin);
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    })
    .await;
}

/// Finding 7, the CLI's part: a record that cannot be sent stops `borges
/// produce`, but what it sent before is flushed, not dropped, and it says
/// how many were delivered and how many failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_produce_failure_flushes_and_reports() {
    use std::io::Write;
    let broker = Broker::start();
    bounded(60, async {
        let client = connect(broker.addr()).await;
        client
            .admin()
            .create_topic("t7c", 1, 1, &[])
            .await
            .expect("create");
        let mut child = borges_produce(broker.addr(), "t7c");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let mut input = String::new();
            for i in 0..5 {
                input.push_str(&format!("ok{i}\n"));
            }
            // Larger than a produce request may be (16 MiB).
            input.push_str(&"x".repeat(17 << 20));
            input.push('\n');
            input.push_str("after\n");
            // borges may stop reading at the big line.
            let _ = stdin.write_all(input.as_bytes());
        });
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        writer.join().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "the big record failed: {stderr}");
        assert!(
            stderr.contains("5 record(s) delivered") && stderr.contains("0 failed"),
            "the report says what was delivered: {stderr}"
        );
        let seen = consume(&client, "t7c", 0, 5).await;
        let values: Vec<&[u8]> = seen.iter().map(|r| r.value.as_deref().unwrap()).collect();
        assert_eq!(values, [&b"ok0"[..], b"ok1", b"ok2", b"ok3", b"ok4"]);
    })
    .await;
}

/// Finding 5: `buffer_memory_bytes` bounds what the producer allocates, not
/// only the record bytes: each open batch is charged its allocation. 64
/// partitions each get one small record of a 16 MiB batch while linger
/// holds them; a 4 MiB buffer must bound the allocation (charged per
/// record, the batches would allocate 1 GiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_memory_bounds_allocation() {
    let broker = Broker::start();
    bounded(60, async {
        let client = connect(broker.addr()).await;
        client
            .admin()
            .create_topic("t5", 64, 1, &[])
            .await
            .expect("create");
        client.topic_metadata("t5").await.expect("metadata");
        const BUFFER: usize = 4 << 20;
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                buffer_memory_bytes: BUFFER,
                batch_size_bytes: 16 << 20,
                linger: Duration::from_secs(30),
                max_block: Duration::from_secs(30),
                ..ProducerConfig::default()
            },
        )
        .unwrap();
        let before = ALLOCATED.load(std::sync::atomic::Ordering::Relaxed);
        let sender = {
            let producer = producer.clone();
            tokio::spawn(async move {
                for p in 0..64 {
                    let rec = ProducerRecord::new("t5").partition(p).value("x");
                    if producer.send(rec).await.is_err() {
                        return p;
                    }
                }
                64
            })
        };
        // Long enough for every send that the buffer lets through.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let grown = ALLOCATED
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(before);
        // Slack for the rest of the process (other tests run alongside).
        assert!(
            grown < BUFFER + (128 << 20),
            "{} MiB allocated with a {} MiB buffer",
            grown >> 20,
            BUFFER >> 20
        );
        drop(producer);
        sender.abort();
    })
    .await;
}

/// `delivery_timeout` and `max_block` of `Duration::MAX` ("forever") are
/// taken as a very long time, not an overflowing deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_timeouts_do_not_overflow() {
    let broker = Broker::start();
    bounded(30, async {
        let client = connect(broker.addr()).await;
        client
            .admin()
            .create_topic("tmax", 1, 1, &[])
            .await
            .expect("create");
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                delivery_timeout: Duration::MAX,
                max_block: Duration::MAX,
                ..ProducerConfig::default()
            },
        )
        .unwrap();
        let m = producer
            .send(ProducerRecord::new("tmax").value("x"))
            .await
            .expect("enqueue")
            .await
            .expect("delivered");
        assert_eq!(m.offset, 0);
    })
    .await;
}

/// A bootstrap broker that takes the connection and resets it (a SIGKILLed
/// process whose port was still open) is one of several: the client asks
/// the next instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_resets_the_connection_is_skipped() {
    let broker = Broker::start();
    let addr = broker.addr().to_string();
    // Accepts every connection and closes it with a reset at once.
    let dying = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let dying_addr = dying.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in dying.incoming().flatten() {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: a valid socket and a correctly sized option value.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
            std::thread::sleep(Duration::from_millis(20));
            drop(s);
        }
    });
    bounded(60, async move {
        let client = Client::connect(&format!("{dying_addr},{addr}"), ClientConfig::default())
            .await
            .expect("the second bootstrap broker answers");
        client
            .admin()
            .create_topic("reset", 1, 1, &[])
            .await
            .expect("create through the live broker");
        println!("bootstrap past a broker that resets every connection: connected, topic created");
    })
    .await;
}
