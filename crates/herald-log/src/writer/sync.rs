//! Syncing several segments in parallel, on threads that live as long as
//! the writer: at a journal checkpoint in `always` mode (about once a
//! second), and every round in `interval` mode when it is time.
//!
//! Partitions are separate files, so they are synced all at once and cost
//! about one `fdatasync`'s wait rather than one per partition. The threads
//! used to be spawned for every round (scoped threads): at the default 8
//! partitions and ~85 rounds a second under load, that was ~600 thread
//! creations a second (each a `clone3`, a stack `mmap`, `mprotect`,
//! `munmap`). Now a round hands each extra partition to a helper thread
//! kept for the next round; the first is synced on the writer's thread.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;

use crate::fault;

/// One partition to sync, and where its result goes.
struct Job {
    file: Arc<File>,
    path: PathBuf,
    done: mpsc::SyncSender<io::Result<()>>,
}

/// Helper threads, one per partition synced beside the first (made on
/// first need, at most partitions - 1). They end when the pool is dropped.
#[derive(Default)]
pub(super) struct SyncPool {
    helpers: Vec<mpsc::Sender<Job>>,
}

impl SyncPool {
    /// `fdatasync`s every file, in parallel; the results in the same order.
    pub(super) fn sync_all(&mut self, files: &[(Arc<File>, PathBuf)]) -> Vec<io::Result<()>> {
        let Some(((first, first_path), rest)) = files.split_first() else {
            return Vec::new();
        };
        let waiting: Vec<Result<mpsc::Receiver<io::Result<()>>, io::Error>> = rest
            .iter()
            .enumerate()
            .map(|(k, (file, path))| self.hand(k, file.clone(), path.clone()))
            .collect();
        let mut out = Vec::with_capacity(files.len());
        out.push(fault::sync_data(first, first_path));
        for w in waiting {
            out.push(w.and_then(|rx| {
                rx.recv()
                    .unwrap_or_else(|_| Err(io::Error::other("sync thread ended")))
            }));
        }
        out
    }

    /// Gives a file to helper `k`, starting it (or a new one in place of
    /// one that ended) when needed.
    fn hand(
        &mut self,
        k: usize,
        file: Arc<File>,
        path: PathBuf,
    ) -> io::Result<mpsc::Receiver<io::Result<()>>> {
        let (done, rx) = mpsc::sync_channel(1);
        let mut job = Job { file, path, done };
        for _ in 0..2 {
            if k >= self.helpers.len() {
                self.helpers.push(spawn(self.helpers.len())?);
            }
            match self.helpers[k].send(job) {
                Ok(()) => return Ok(rx),
                Err(mpsc::SendError(j)) => {
                    // The thread ended: start another in its place.
                    job = j;
                    self.helpers[k] = spawn(k)?;
                }
            }
        }
        Err(io::Error::other("sync thread cannot be started"))
    }
}

fn spawn(k: usize) -> io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name(format!("herald-log-sync-{k}"))
        .stack_size(256 * 1024)
        .spawn(move || {
            for job in rx {
                let _ = job.done.send(fault::sync_data(&job.file, &job.path));
            }
        })?;
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_every_file_and_keeps_its_threads() {
        let dir = std::env::temp_dir().join(format!("herald-sync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files: Vec<(Arc<File>, PathBuf)> = (0..4)
            .map(|i| {
                let p = dir.join(format!("{i}"));
                (Arc::new(File::create(&p).unwrap()), p)
            })
            .collect();
        let mut pool = SyncPool::default();
        for _ in 0..3 {
            let r = pool.sync_all(&files);
            assert_eq!(r.len(), 4);
            assert!(r.iter().all(|r| r.is_ok()));
            assert_eq!(pool.helpers.len(), 3);
        }
        assert!(pool.sync_all(&[]).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
