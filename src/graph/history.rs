//! Undo and redo of graph edits, as snapshots (graphs are small: a few kilobytes).

use super::Graph;

/// Most snapshots kept.
pub const DEPTH: usize = 200;

/// The graph's past and undone future.
#[derive(Debug, Clone, Default)]
pub struct History {
    past: Vec<Graph>,
    future: Vec<Graph>,
}

impl History {
    /// Records `before`, the graph as it was before an edit; drops the redo future.
    pub fn record(&mut self, before: Graph) {
        if self.past.last() == Some(&before) {
            return;
        }
        self.past.push(before);
        if self.past.len() > DEPTH {
            self.past.remove(0);
        }
        self.future.clear();
    }

    /// Steps back from `current`; returns the graph to show, or `None` at the oldest.
    pub fn undo(&mut self, current: &Graph) -> Option<Graph> {
        let previous = self.past.pop()?;
        self.future.push(current.clone());
        Some(previous)
    }

    /// Steps forward from `current`; returns the graph to show, or `None` at the newest.
    pub fn redo(&mut self, current: &Graph) -> Option<Graph> {
        let next = self.future.pop()?;
        self.past.push(current.clone());
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Node;

    #[test]
    fn undo_restores_a_deleted_node_and_redo_deletes_it_again() {
        let mut history = History::default();
        let mut graph = Graph::first_start();
        let before = graph.clone();
        let sampler = graph.nodes.iter().find(|n| matches!(n.node, Node::Sampler(_))).map(|n| n.id);
        graph.remove(sampler.unwrap_or(0));
        history.record(before.clone());
        let restored = history.undo(&graph);
        assert_eq!(restored.as_ref(), Some(&before));
        assert_eq!(history.redo(&before), Some(graph.clone()));
        assert_eq!(history.redo(&graph), None);
        history.undo(&graph);
        history.record(Graph::default());
        assert_eq!(history.redo(&Graph::default()), None, "a new edit drops the future");
    }
}
