"""edgepack on-device benchmark agent: runs bundle artifacts and measures them. Never imports the packing side."""
