// Go net/rpc peer with its default gob codec.
//
//	netrpc server ADDR                          prints the bound address
//	netrpc client ADDR CALLS INFLIGHT SIZE      prints "calls_per_s X mb_per_s Y"
//
// The client runs INFLIGHT goroutines sharing one rpc.Client (net/rpc
// pipelines them on one connection). SIZE 0 calls Arith.Sum, otherwise
// Arith.Echo with SIZE bytes.
package main

import (
	"fmt"
	"net"
	"net/rpc"
	"os"
	"strconv"
	"sync"
	"time"
)

type Args struct{ A, B int }

type Arith int

func (t *Arith) Sum(args *Args, reply *int) error { *reply = args.A + args.B; return nil }

func (t *Arith) Echo(args []byte, reply *[]byte) error { *reply = args; return nil }

func server(addr string) {
	rpc.Register(new(Arith))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		panic(err)
	}
	fmt.Println(l.Addr().String())
	rpc.Accept(l)
}

func client(addr string, calls, inflight, size int) {
	c, err := rpc.Dial("tcp", addr)
	if err != nil {
		panic(err)
	}
	payload := make([]byte, size)
	per := calls / inflight
	start := time.Now()
	var wg sync.WaitGroup
	for g := 0; g < inflight; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if size == 0 {
					var reply int
					if err := c.Call("Arith.Sum", &Args{i, 1}, &reply); err != nil || reply != i+1 {
						panic(fmt.Sprint("bad reply ", err))
					}
				} else {
					var reply []byte
					if err := c.Call("Arith.Echo", payload, &reply); err != nil || len(reply) != size {
						panic(fmt.Sprint("bad reply ", err))
					}
				}
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	done := float64(per * inflight)
	fmt.Printf("calls_per_s %.1f mb_per_s %.2f\n", done/secs, done*float64(size)/secs/1e6)
}

func main() {
	if len(os.Args) >= 3 && os.Args[1] == "server" {
		server(os.Args[2])
		return
	}
	if len(os.Args) >= 6 && os.Args[1] == "client" {
		n, _ := strconv.Atoi(os.Args[3])
		k, _ := strconv.Atoi(os.Args[4])
		s, _ := strconv.Atoi(os.Args[5])
		client(os.Args[2], n, k, s)
		return
	}
	fmt.Fprintln(os.Stderr, "usage: netrpc server ADDR | client ADDR CALLS INFLIGHT SIZE")
	os.Exit(2)
}
