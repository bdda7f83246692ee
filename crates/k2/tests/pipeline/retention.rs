//! Snapshot expiry and orphan sweeps: never what a writer resumes from.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_snapshots_expire_but_never_what_a_writer_resumes_from() {
    use iceberg::transaction::ApplyTransactionAction;

    use k2_lake::commit_marks::{committed_offsets, source_snapshot};
    use k2_lake::retention;

    let l = lake().await;
    let trades = || trades_table(&l);
    // The metadata log names only the last 3 files, so that files go with a few commits.
    k2_lake::ensure_tables(l.catalog.as_ref()).await.unwrap();
    let tx = iceberg::transaction::Transaction::new(&trades().await);
    let tx = tx
        .update_table_properties()
        .set("write.metadata.previous-versions-max".into(), "3".into())
        .apply(tx)
        .unwrap();
    tx.commit(l.catalog.as_ref()).await.unwrap();
    // Writer "" commits several snapshots; then writer "b", reading its own log (the
    // sample), one.
    ingest_synthetic(&l.log, &l.dlq, 3, 20_000).await;
    let small_batches = small_batches();
    write_with(&l, small_batches.clone()).await;
    let log_b = EmbeddedLog::open(&l._dir.path().join("log-b.redb")).unwrap();
    k2_ingest::ingest_asx(&log_b, &l.dlq, &sample(), &Default::default(), &mut |_| {})
        .await
        .unwrap();
    let b_options = WriterOptions {
        source: "b".into(),
        ..Default::default()
    };
    write_from(&log_b, &l, b_options).await;
    let table = trades().await;
    let chain = ancestry(&table);
    assert!(chain.len() >= 6, "{chain:?}");
    let offsets = |t: &iceberg::table::Table| {
        (
            committed_offsets(t, "").unwrap(),
            committed_offsets(t, "b").unwrap(),
        )
    };
    let before = offsets(&table);
    assert!(!before.0.is_empty() && !before.1.is_empty());
    let rows_before = trade_rows(&l).await;

    // Nothing is old enough under a day's retention.
    let now = chrono::Utc::now().timestamp_millis();
    assert!(retention::due(&table, Duration::from_secs(86_400), now).is_empty());
    // With none: everything past "b"'s snapshot (the current one) and ""'s newest goes,
    // but a tagged snapshot stays.
    let tag = |id: i64| iceberg::TableUpdate::SetSnapshotRef {
        ref_name: "kept".into(),
        reference: iceberg::spec::SnapshotReference::new(
            id,
            iceberg::spec::SnapshotRetention::Tag {
                max_ref_age_ms: None,
            },
        ),
    };
    let table = committer(&l)
        .await
        .commit(&LakeTable::Trades.ident(), vec![], vec![tag(chain[3])])
        .await
        .unwrap();
    let due = retention::due(&table, Duration::ZERO, now);
    let mut want = chain[2..].to_vec();
    want.retain(|id| *id != chain[3]);
    assert_eq!(due, want);
    let lists: Vec<String> = due
        .iter()
        .map(|&id| {
            let s = table.metadata().snapshot_by_id(id).unwrap();
            s.manifest_list().to_string()
        })
        .collect();
    let exists = |files: &[String]| {
        let io = table.file_io().clone();
        let files = files.to_vec();
        async move {
            let mut out = Vec::new();
            for f in files {
                out.push(io.exists(&f).await.unwrap());
            }
            out
        }
    };
    assert!(exists(&lists).await.iter().all(|e| *e), "{lists:?}");
    let (after, expired) = retention::expire(l.catalog.as_ref(), &table, Duration::ZERO, now)
        .await
        .unwrap();
    assert_eq!(expired.snapshots, chain.len() - 3);
    assert!(expired.files >= lists.len(), "{expired:?}");
    assert_eq!(ancestry(&after), chain[..2].to_vec());
    assert_eq!(ancestry(&trades().await), chain[..2].to_vec());
    let tagged = after.metadata().snapshot_for_ref("kept").unwrap();
    assert_eq!(
        tagged.snapshot_id(),
        chain[3],
        "the tagged snapshot is kept"
    );
    assert!(exists(&lists).await.iter().all(|e| !*e));
    // The positions both writers resume from, and every row, are still there.
    assert_eq!(offsets(&after), before);
    assert!(source_snapshot(&after, "").is_some());
    assert_eq!(trade_rows(&l).await, rows_before);
    // Metadata files: the current one and those its log names, none older.
    let named = after.metadata().metadata_log().len() + 1;
    let current = after.metadata_location().unwrap();
    let store = k2_lake::warehouse::Files::of(after.file_io(), current).unwrap();
    let everything = std::time::SystemTime::now() + Duration::from_secs(86_400);
    let files = store
        .older_than(current.rsplit_once('/').unwrap().0, everything)
        .await
        .unwrap()
        .iter()
        .filter(|p| p.as_ref().ends_with(".metadata.json"))
        .count();
    assert!(
        named <= 4 && files == named,
        "{files} metadata files, {named} named"
    );

    // The writer expires by itself after a commit, keeping "b"'s snapshot.
    ingest_synthetic(&l.log, &l.dlq, 6, 24_000).await;
    let third = write_with(
        &l,
        WriterOptions {
            snapshot_retention: Some(Duration::ZERO),
            ..small_batches
        },
    )
    .await;
    assert_accounts(&third);
    let stored = third.rows_committed["market_data.trades"] as usize;
    assert!(third.commits > 2 && stored > 0, "{third:?}");
    let last = trades().await;
    let kept = ancestry(&last);
    // The run's first commit expired what came before it except "b"'s newest; its later
    // commits wait for the next check.
    assert!(kept.contains(&chain[0]), "b's snapshot: {kept:?}");
    assert!(!kept.contains(&chain[1]), "{kept:?}");
    assert_eq!(committed_offsets(&last, "b").unwrap(), before.1);
    assert_eq!(trade_rows(&l).await, rows_before + stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_files_no_snapshot_names_go_once_older_than_the_retention() {
    use k2_lake::retention;

    // Files are aged by their modification time, which only a local disk lets a test set.
    let l = lake_on_disk().await;
    let trades = || trades_table(&l);
    ingest_synthetic(&l.log, &l.dlq, 3, 12_000).await;
    let small_batches = small_batches();
    write_with(&l, small_batches.clone()).await;
    let table = trades().await;
    let location = table.metadata().location();
    let files = k2_lake::warehouse::Files::of(table.file_io(), location).unwrap();
    // Every file under the directory: all are older than a day from now.
    let later = std::time::SystemTime::now() + Duration::from_secs(86_400);
    let committed: Vec<PathBuf> = files
        .older_than(&format!("{location}/data"), later)
        .await
        .unwrap()
        .iter()
        .map(|p| PathBuf::from(format!("/{p}")))
        .collect();
    assert!(committed.len() >= 3, "{committed:?}");
    let rows = trade_rows(&l).await;
    let day = Duration::from_secs(86_400);
    let now = std::time::SystemTime::now();
    let age = |path: &Path, by: Duration| {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(now - by).unwrap();
    };
    // Every committed file is two days old: old enough, and named, so kept. Of two files no
    // snapshot names (a batch written and never committed), the old one goes.
    let partition = committed[0].parent().unwrap();
    let (old, young) = (
        partition.join("k2-never-committed-old.parquet"),
        partition.join("k2-never-committed-young.parquet"),
    );
    for path in [&old, &young] {
        std::fs::copy(&committed[0], path).unwrap();
    }
    for path in committed.iter().chain([&old]) {
        age(path, 2 * day);
    }
    assert_eq!(
        retention::remove_orphan_files(&table, day, now)
            .await
            .unwrap(),
        1
    );
    assert!(!old.exists() && young.exists());
    assert!(committed.iter().all(|p| p.exists()));
    assert_eq!(trade_rows(&l).await, rows);
    // Nothing is old enough under a retention of three days: no manifest is even read.
    age(&young, 2 * day);
    assert_eq!(
        retention::remove_orphan_files(&table, 3 * day, now)
            .await
            .unwrap(),
        0
    );
    assert!(young.exists());

    // The writer looks by itself at its first commit.
    ingest_synthetic(&l.log, &l.dlq, 6, 24_000).await;
    let summary = write_with(
        &l,
        WriterOptions {
            snapshot_retention: Some(day),
            ..small_batches
        },
    )
    .await;
    assert!(summary.commits > 0, "{summary:?}");
    assert!(!young.exists());
    assert!(committed.iter().all(|p| p.exists()));
    assert_eq!(
        trade_rows(&l).await,
        rows + summary.rows_committed["market_data.trades"] as usize
    );
}
