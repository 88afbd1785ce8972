"""Turn a Plan into kernel state: our nft table, our routes and rules, conntrack."""
