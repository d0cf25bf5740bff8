"""Oracle feeds: price sources, their checks and aggregation, and the feeds process (issue 8)."""
