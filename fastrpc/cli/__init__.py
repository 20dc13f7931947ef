"""The ``fastrpc`` command: serve, call, list, describe, ping, bench, registry.

    main      the argument parser, one-line errors and exit codes
    serve     serving objects, several worker processes behind one port
    bench     closed- and open-loop load with latency percentiles
    output    values as JSON, percentiles, progress
"""
