//! Ranking metrics for the theft-scoring evaluation: ROC-AUC, PR-AUC (average precision) and
//! MAP@N as defined by Zheng et al., "Wide and deep convolutional neural networks for electricity
//! theft detection", IEEE Access 6, 2018, §IV-B: the mean of the precisions at the ranks of the
//! thieves found in the top N.

/// Area under the ROC curve by the rank-sum (Mann–Whitney U) statistic, ties counted half.
/// `None` without both classes.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut i) = (0.0f64, 0usize);
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Ranks i+1..=j+1 are tied: each gets their mean.
        let mean_rank = (i + j + 2) as f64 / 2.0;
        rank_sum += (i..=j).filter(|&k| labels[order[k]]).count() as f64 * mean_rank;
        i = j + 1;
    }
    let u = rank_sum - (positives * (positives + 1)) as f64 / 2.0;
    Some(u / (positives as f64 * negatives as f64))
}

fn ranked(scores: &[f64], labels: &[bool]) -> Vec<bool> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Ties are broken pessimistically (honest first) so a constant score earns nothing.
    order.sort_by(|&a, &b| {
        scores[b]
            .total_cmp(&scores[a])
            .then(labels[a].cmp(&labels[b]))
    });
    order.into_iter().map(|i| labels[i]).collect()
}

/// Area under the precision–recall curve as average precision: the mean over all thieves of
/// the precision at each thief's rank.
pub fn pr_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 {
        return None;
    }
    let (mut hits, mut sum) = (0usize, 0.0);
    for (k, is_theft) in ranked(scores, labels).into_iter().enumerate() {
        if is_theft {
            hits += 1;
            sum += hits as f64 / (k + 1) as f64;
        }
    }
    Some(sum / positives as f64)
}

/// MAP@N: mean of the precisions at the ranks of the thieves within the top `n`; 0 when the top
/// `n` holds no thief.
pub fn map_at(scores: &[f64], labels: &[bool], n: usize) -> f64 {
    let (mut hits, mut sum) = (0usize, 0.0);
    for (k, is_theft) in ranked(scores, labels).into_iter().take(n).enumerate() {
        if is_theft {
            hits += 1;
            sum += hits as f64 / (k + 1) as f64;
        }
    }
    if hits == 0 { 0.0 } else { sum / hits as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_inverse_and_tied_rankings() {
        let labels = [true, true, false, false];
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &labels), Some(1.0));
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &labels), Some(0.0));
        assert_eq!(roc_auc(&[0.5; 4], &labels), Some(0.5));
        assert_eq!(pr_auc(&[0.9, 0.8, 0.2, 0.1], &labels), Some(1.0));
        assert_eq!(map_at(&[0.9, 0.8, 0.2, 0.1], &labels, 100), 1.0);
        assert_eq!(roc_auc(&[0.5, 0.4], &[true, true]), None);
    }

    #[test]
    fn average_precision_by_hand() {
        // Ranking: T F T F -> precisions 1/1 and 2/3.
        let scores = [0.9, 0.8, 0.7, 0.6];
        let labels = [true, false, true, false];
        let ap = pr_auc(&scores, &labels).unwrap();
        assert!((ap - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert!((map_at(&scores, &labels, 2) - 1.0).abs() < 1e-12);
        assert!((roc_auc(&scores, &labels).unwrap() - 0.75).abs() < 1e-12);
    }
}
