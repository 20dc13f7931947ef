module fastrpc.test/gointerop

go 1.19
