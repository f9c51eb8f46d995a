//! Streams from many nodes over Unix and TCP land in their own directories, exactly once.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_nodes_over_unix_and_tcp_land_exactly_once_in_order() {
    let d = Daemon::start("");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let port = d.tcp_port;
        let sock = d.socket();
        tasks.push(tokio::spawn(async move {
            let name = format!("node-{i}");
            if i % 2 == 0 {
                let mut n = FakeNode::handshake(connect_tcp(port).await, &name).await;
                for b in 0..10 {
                    n.send_batch(1 + b * 50, 50, 64).await;
                }
                n.wait_ack(500).await;
            } else {
                let mut n = FakeNode::handshake(connect_unix(&sock).await, &name).await;
                for b in 0..10 {
                    n.send_batch(1 + b * 50, 50, 64).await;
                }
                n.wait_ack(500).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for i in 0..20 {
        let dir = d.logs().join(format!("node-{i}"));
        assert_eq!(seqs(&dir), (1..=500).collect::<Vec<_>>(), "node-{i}");
        let link = std::fs::read_link(dir.join("node.json")).unwrap();
        assert!(dir.join(link).is_file());
    }
}
