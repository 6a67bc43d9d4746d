//! Small state files of a replica (its vote, its applied position): written
//! whole through a temporary file and a rename, with a CRC32C so a damaged
//! file is noticed rather than believed.

use std::io::Write;
use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};

/// Writes `value` to `path`; with `sync`, durable when this returns.
pub fn save<T: Serialize>(path: &Path, value: &T, sync: bool) -> std::io::Result<()> {
    let body = rmp_serde::to_vec(value).map_err(std::io::Error::other)?;
    let mut data = crc32c::crc32c(&body).to_le_bytes().to_vec();
    data.extend_from_slice(&body);
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        if sync {
            f.sync_data()?;
        }
    }
    std::fs::rename(&tmp, path)?;
    if sync {
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

/// Reads what [`save`] wrote: `Ok(None)` when there is no file, an error
/// when it is damaged.
pub fn load<T: DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if data.len() < 4 {
        return Err(std::io::Error::other(format!(
            "{} is too short",
            path.display()
        )));
    }
    let crc = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    if crc32c::crc32c(&data[4..]) != crc {
        return Err(std::io::Error::other(format!(
            "{} fails its checksum",
            path.display()
        )));
    }
    rmp_serde::from_slice(&data[4..])
        .map(Some)
        .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))
}
