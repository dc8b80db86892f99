"""Bitcoin from raw consensus bytes: block and transaction parsing (``block``), scriptPubKey
classification and addresses (``script``), and Bitcoin Core ``blk*.dat`` files (``blkfile``)."""
