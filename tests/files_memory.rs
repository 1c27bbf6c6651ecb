//! A 1 GiB file streamed through a real socket in bounded memory. A test binary of its own:
//! the resident set it measures is the whole process's, which other tests running beside it
//! would inflate.

mod common;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEAD: &str = common::ONE_LISTENER;

/// The resident set of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_gib_file_streams_in_bounded_memory() {
    const GIB: u64 = 1 << 30;
    let root = std::env::temp_dir().join(format!("gatehouse-files-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    // Sparse: a GiB of zeros that takes no disk.
    let file = std::fs::File::create(root.join("huge.bin")).unwrap();
    file.set_len(GIB).unwrap();
    drop(file);
    let config = format!(
        "{HEAD}\n[[route]]\npath_prefix = \"/\"\nfiles = {{ root = \"{}\" }}\n",
        root.display()
    );
    let gatehouse = common::start_gatehouse(&config).await;
    let addr = gatehouse.listener_addrs[0];
    let before = rss_kib();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /huge.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 256 << 10];
    let mut received: u64 = 0;
    let mut peak = before;
    let deadline = std::time::Duration::from_secs(120);
    tokio::time::timeout(deadline, async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            received += n as u64;
            if received % (64 << 20) < n as u64 {
                peak = peak.max(rss_kib());
            }
        }
    })
    .await
    .expect("a GiB within the deadline");
    peak = peak.max(rss_kib());
    assert!(received > GIB, "head and body: {received}");
    let growth_mib = peak.saturating_sub(before) / 1024;
    println!("resident set grew by {growth_mib} MiB while streaming 1 GiB");
    assert!(growth_mib < 64, "grew by {growth_mib} MiB");
    gatehouse.shutdown().await;
    std::fs::remove_dir_all(&root).unwrap();
}
