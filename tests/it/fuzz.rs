//! The fuzz targets' findings, replayed on stable: every file under
//! `tests/fuzz/regressions/<target>/` (inputs that once crashed a target,
//! kept after the fix) and `tests/fuzz/seeds/<target>/` goes through the same
//! entry point the fuzzer drives (`callgate::fuzzing`), which panics when an
//! invariant breaks.

use std::path::Path;

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz");

/// The files of `dir`, sorted; none when it does not exist.
fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn fuzz_regressions_and_seeds_replay_without_a_panic() {
    let mut replayed = 0;
    let mut failed = Vec::new();
    for (target, entry) in callgate::fuzzing::TARGETS {
        assert!(
            Path::new(FUZZ_DIR)
                .join(format!("fuzz_targets/{target}.rs"))
                .is_file(),
            "no fuzz target for `{target}`"
        );
        for kind in ["regressions", "seeds"] {
            for file in inputs(&Path::new(FUZZ_DIR).join(kind).join(target)) {
                let data = std::fs::read(&file).unwrap();
                replayed += 1;
                if std::panic::catch_unwind(|| entry(&data)).is_err() {
                    failed.push(file.display().to_string());
                }
            }
        }
    }
    assert!(failed.is_empty(), "these inputs panic: {failed:#?}");
    assert!(replayed >= 6, "only {replayed} inputs found");
}
