//! The replay log's work on two embedded stores: append records of a
//! 768-dimension upsert's size, each fsync'd and 64 per fsync, then read the
//! oldest and delete it until empty. Prints microseconds per record.

use std::path::{Path, PathBuf};
use std::time::Instant;

const N: u64 = 3000;
const BATCH: u64 = 64;

fn record() -> Vec<u8> {
    vec![7u8; 3200]
}

fn per_record(started: Instant, n: u64) -> f64 {
    started.elapsed().as_micros() as f64 / n as f64
}

fn redb(dir: &Path) {
    use redb::{Database, Durability, ReadableTable, TableDefinition};
    const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
    let path = dir.join("log.redb");
    let db = Database::create(&path).unwrap();
    let r = record();
    let started = Instant::now();
    for i in 0..N {
        let tx = db.begin_write().unwrap();
        tx.open_table(LOG).unwrap().insert(i, r.as_slice()).unwrap();
        tx.commit().unwrap();
    }
    println!(
        "redb  append, fsync each:   {:6.1} us",
        per_record(started, N)
    );
    let started = Instant::now();
    for b in 0..N / BATCH {
        let tx = db.begin_write().unwrap();
        {
            let mut table = tx.open_table(LOG).unwrap();
            for j in 0..BATCH {
                table.insert(N + b * BATCH + j, r.as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    println!(
        "redb  append, {BATCH} per fsync: {:6.1} us",
        per_record(started, N)
    );
    let (started, mut n) = (Instant::now(), 0);
    loop {
        let mut tx = db.begin_write().unwrap();
        let _ = tx.set_durability(Durability::None);
        let first = {
            let mut table = tx.open_table(LOG).unwrap();
            let first = table.first().unwrap().map(|(k, _)| k.value());
            if let Some(key) = first {
                table.remove(key).unwrap();
            }
            first
        };
        tx.commit().unwrap();
        if first.is_none() {
            break;
        }
        n += 1;
    }
    println!(
        "redb  read oldest + delete: {:6.1} us ({n} records)",
        per_record(started, n)
    );
    println!(
        "redb  file after draining:  {} KB",
        std::fs::metadata(&path).unwrap().len() / 1024
    );
}

fn fjall(dir: &Path) {
    use fjall::{Database, KeyspaceCreateOptions, PersistMode};
    let db = Database::builder(dir.join("fjall")).open().unwrap();
    let log = db.keyspace("log", KeyspaceCreateOptions::default).unwrap();
    let r = record();
    let started = Instant::now();
    for i in 0..N {
        log.insert(i.to_be_bytes(), r.as_slice()).unwrap();
        db.persist(PersistMode::SyncData).unwrap();
    }
    println!(
        "fjall append, fsync each:   {:6.1} us",
        per_record(started, N)
    );
    let started = Instant::now();
    for b in 0..N / BATCH {
        let mut batch = db.batch();
        for j in 0..BATCH {
            batch.insert(&log, (N + b * BATCH + j).to_be_bytes(), r.as_slice());
        }
        batch.commit().unwrap();
        db.persist(PersistMode::SyncData).unwrap();
    }
    println!(
        "fjall append, {BATCH} per fsync: {:6.1} us",
        per_record(started, N)
    );
    let (started, mut n, mut from) = (Instant::now(), 0, 0u64);
    while let Some(item) = log.range(from.to_be_bytes()..).next() {
        let (key, _) = item.into_inner().unwrap();
        log.remove(key.clone()).unwrap();
        from = u64::from_be_bytes(key.as_ref().try_into().unwrap()) + 1;
        n += 1;
    }
    println!(
        "fjall read oldest + delete: {:6.1} us ({n} records)",
        per_record(started, n)
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("log-stores-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn main() {
    for (name, run) in [("redb", redb as fn(&Path)), ("fjall", fjall)] {
        let dir = scratch(name);
        run(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
