"""scripts/bench/throughput, one module per concern (the entry point is that script):

    settings.py     addresses, ports, targets, the command line, full and --quick durations
    launch.py       outside: tool checks, the build, re-execution inside private namespaces
    testbed.py      inside: /run, the veth peer, lvlipd on tap0, processes, recorded commands
    progress.py     the progress line on stderr
    loadgen.py      loadgen.c's echo servers and clients on either stack; merging runs
    bulk.py         phase 1: iperf3 upload and download, lvlipd CPU per GB, retransmissions
    rr.py           phase 2: 64-byte request/response rate and latency
    connrate.py     phase 3: connections per second
    concurrency.py  phase 4: 10,000 connections at once, lvlipd's RSS
    loss.py         phase 5: goodput of a download under 1% and 5% loss
    sendloss.py     phase 6: goodput of an upload under 1% and 5% loss (lvlip the sender)
    rows.py         the report's figures per mode, judged against the targets
    report.py       the markdown report and its section of docs/benchmarks.md
    chart.py        docs/bench-throughput.png
    host.py         the machine, its load, the checkout's revision
    main.py         runs the phases asked for (`--only PHASE`), each in every mode, then reports

A phase module holds `run(bed)`: it starts its own lvlipd and servers on the Testbed, stores
its figures in bed.results (the current mode's: bed.use_mode pins and files them) and stops
everything it started, so it reads, and runs (`scripts/bench/throughput --only PHASE`), on its
own."""
