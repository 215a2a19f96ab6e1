//! The batchers' shared shape: gather what a node's queue holds into one
//! batch, then split it per auction or group buy, in arrival order.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Waits for one item, then takes what is queued or arrives within
/// `window`, up to `max`. `None` once `shutdown` fires or the queue closes.
pub(crate) async fn next<T>(
    inbox: &mut mpsc::Receiver<T>,
    max: usize,
    window: Duration,
    shutdown: &CancellationToken,
) -> Option<Vec<T>> {
    let first = tokio::select! {
        _ = shutdown.cancelled() => return None,
        r = inbox.recv() => r?,
    };
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + window;
    while batch.len() < max.max(1) {
        match inbox.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => match tokio::time::timeout_at(deadline, inbox.recv()).await {
                Ok(Some(r)) => batch.push(r),
                _ => break,
            },
        }
    }
    Some(batch)
}

/// The batch split per `key`, keys in order of first arrival, each part in arrival order.
pub(crate) fn per_key<T, K: PartialEq + Copy>(batch: Vec<T>, key: impl Fn(&T) -> K) -> Vec<(K, Vec<T>)> {
    let mut groups: Vec<(K, Vec<T>)> = Vec::new();
    for item in batch {
        let k = key(&item);
        match groups.iter_mut().find(|(id, _)| *id == k) {
            Some((_, g)) => g.push(item),
            None => groups.push((k, vec![item])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_splits_per_key_in_arrival_order() {
        let groups = per_key(vec![(1, 'a'), (2, 'b'), (1, 'c')], |x| x.0);
        assert_eq!(groups, vec![(1, vec![(1, 'a'), (1, 'c')]), (2, vec![(2, 'b')])]);
    }

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_up_to_its_size_and_ends_with_the_queue() {
        let (tx, mut rx) = mpsc::channel(10);
        for i in 0..5 {
            tx.send(i).await.unwrap();
        }
        drop(tx);
        let shutdown = CancellationToken::new();
        assert_eq!(
            next(&mut rx, 3, Duration::from_millis(1), &shutdown).await,
            Some(vec![0, 1, 2])
        );
        assert_eq!(
            next(&mut rx, 3, Duration::from_millis(1), &shutdown).await,
            Some(vec![3, 4])
        );
        assert_eq!(next(&mut rx, 3, Duration::from_millis(1), &shutdown).await, None);
    }
}
