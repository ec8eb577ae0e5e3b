//! Which keypoints a pose's skeleton joins.

/// COCO's 17-keypoint person skeleton (0-based keypoint ids), as Ultralytics draws it.
pub const COCO17: [(u32, u32); 19] = [
    (15, 13),
    (13, 11),
    (16, 14),
    (14, 12),
    (11, 12),
    (5, 11),
    (6, 12),
    (5, 6),
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (1, 2),
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
];

/// The edges for a pose of class `class_id` with `keypoint_count` keypoints: the model's own
/// when it declares them, else COCO's when it has COCO's 17 keypoints, else none.
pub fn edges_for(model_edges: &[Vec<(u32, u32)>], class_id: u32, keypoint_count: usize) -> &[(u32, u32)] {
    match model_edges.get(class_id as usize) {
        Some(edges) if !edges.is_empty() => edges,
        _ if keypoint_count == 17 => &COCO17,
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_edges_win_then_coco_then_none() {
        let own = vec![vec![(0, 1), (1, 2)]];
        assert_eq!(edges_for(&own, 0, 17), &[(0, 1), (1, 2)]);
        assert_eq!(edges_for(&own, 1, 17), &COCO17);
        assert!(edges_for(&[], 0, 3).is_empty());
    }
}
