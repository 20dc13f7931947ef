module fastrpc.bench/netrpc

go 1.19
