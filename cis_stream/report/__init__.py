"""What the product tells its user: closing summaries, `cis-stream inspect`, the HTML report."""
