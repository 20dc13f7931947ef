// Stock Go net/rpc programs that fastrpc's interop tests run against.
//
//	gointerop serve                 serves gob (TCP), gob over HTTP CONNECT and
//	                                jsonrpc on 127.0.0.1; prints one JSON line
//	                                {"gob": ADDR, "http": ADDR, "jsonrpc": ADDR}
//	gointerop client MODE ADDR      runs every scenario against a server
//	                                (MODE gob | http | jsonrpc); prints one JSON
//	                                object {scenario: {"ok": bool, "detail": ...}}
//	gointerop hangup MODE ADDR M    starts a call of M, then closes the connection
//	gointerop golden                prints gob encodings as JSON [{name, hex}]
//
// Only the standard library is used; nothing here knows about fastrpc.
package main

import (
	"bytes"
	"encoding/gob"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/rpc"
	"net/rpc/jsonrpc"
	"os"
	"reflect"
	"sync"
	"time"
)

type Args struct{ A, B int }

// Shapes of Args a Go program may use: fields in another order, an extra
// field, a missing one. Go's decoders match fields by name.
type Swapped struct{ B, A int }
type WithExtra struct {
	A, B  int
	Extra string
}
type OnlyB struct{ B int }

// Bag's collections may be nil: Go reads a nil slice, map or []byte as empty.
type Bag struct {
	Tags  []string
	Attrs map[string]int
	Blob  []byte
}

type Point struct{ X, Y float64 }

type Inner struct {
	Name   string
	Tags   []string
	Scores map[string]int
}

type Record struct {
	ID     int64
	Count  uint64
	Ratio  float64
	Name   string
	Data   []byte
	Flag   bool
	Points []Point
	Inner  Inner
	Next   *Record
	Meta   map[string]string
	Grid   [3]int
	Ints   []int
}

type Arith int

func (t *Arith) Sum(args *Args, reply *int) error { *reply = args.A + args.B; return nil }
func (t *Arith) Sub(args *Args, reply *int) error { *reply = args.A - args.B; return nil }

// Pid tells which server process answered (balancing tests).
func (t *Arith) Pid(args *Args, reply *int) error { *reply = os.Getpid(); return nil }

func (t *Arith) Div(args *Args, reply *int) error {
	if args.B == 0 {
		return errors.New("divide by zero")
	}
	*reply = args.A / args.B
	return nil
}

type Echo int

func (e *Echo) Record(r *Record, reply *Record) error { *reply = *r; return nil }
func (e *Echo) Int(v int64, reply *int64) error       { *reply = v; return nil }
func (e *Echo) Uint(v uint64, reply *uint64) error    { *reply = v; return nil }
func (e *Echo) String(v string, reply *string) error  { *reply = v; return nil }
func (e *Echo) Bytes(v []byte, reply *[]byte) error   { *reply = v; return nil }
func (e *Echo) Floats(v []float64, reply *[]float64) error {
	*reply = v
	return nil
}
func (e *Echo) Map(v map[string]int, reply *map[string]int) error { *reply = v; return nil }
func (e *Echo) Lengths(b *Bag, reply *string) error {
	*reply = fmt.Sprintf("%d,%d,%d", len(b.Tags), len(b.Attrs), len(b.Blob))
	return nil
}

func listen() net.Listener {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	return l
}

func serve() {
	rpc.Register(new(Arith))
	rpc.Register(new(Echo))
	gobL, httpL, jsonL := listen(), listen(), listen()
	go rpc.Accept(gobL)
	rpc.HandleHTTP()
	go http.Serve(httpL, nil)
	go func() {
		for {
			conn, err := jsonL.Accept()
			if err != nil {
				return
			}
			go jsonrpc.ServeConn(conn)
		}
	}()
	out, _ := json.Marshal(map[string]string{
		"gob": gobL.Addr().String(), "http": httpL.Addr().String(), "jsonrpc": jsonL.Addr().String()})
	fmt.Println(string(out))
	select {}
}

func dial(mode, addr string) *rpc.Client {
	var c *rpc.Client
	var err error
	switch mode {
	case "gob":
		c, err = rpc.Dial("tcp", addr)
	case "http":
		c, err = rpc.DialHTTP("tcp", addr)
	case "jsonrpc":
		c, err = jsonrpc.Dial("tcp", addr)
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(2)
	}
	return c
}

// hangup starts a call and closes the connection while it runs: net/rpc
// servers run the method to completion anyway.
func hangup(mode, addr, method string) {
	c := dial(mode, addr)
	var reply int
	c.Go(method, &Args{1, 2}, &reply, nil)
	time.Sleep(200 * time.Millisecond)
	c.Close()
}

func sampleRecord(mode string) Record {
	inf := math.Inf(1)
	if mode == "jsonrpc" { // JSON has no infinities
		inf = 1e300
	}
	return Record{
		ID: -9007199254740993, Count: math.MaxUint64, Ratio: -2.5e-300, Name: "héllo, 世界",
		Data: []byte{0, 1, 2, 255}, Flag: true,
		Points: []Point{{1.5, -2}, {0, 0}, {inf, math.MaxFloat64}},
		Inner:  Inner{Name: "in", Tags: []string{"a", "", "c"}, Scores: map[string]int{"x": -1, "y": 1 << 40}},
		Next:   &Record{ID: 1, Name: "next", Grid: [3]int{0, 0, 7}},
		Meta:   map[string]string{"k": "v", "": "empty"},
		Grid:   [3]int{-1, 0, math.MaxInt64},
		Ints:   []int{math.MinInt64, -1, 0, 1, math.MaxInt64},
	}
}

type result struct {
	Ok     bool   `json:"ok"`
	Detail string `json:"detail"`
}

func client(mode, addr string) {
	c := dial(mode, addr)
	defer c.Close()
	results := map[string]result{}
	check := func(name string, ok bool, detail string) { results[name] = result{ok, detail} }

	var sum int
	err := c.Call("Arith.Sum", &Args{10, 20}, &sum)
	check("sum", err == nil && sum == 30, fmt.Sprint(sum, " ", err))

	err = c.Call("Arith.Sum", &Args{-7, math.MinInt64 + 7}, &sum)
	check("sum_negative", err == nil && sum == math.MinInt64, fmt.Sprint(sum, " ", err))

	err = c.Call("Arith.Div", &Args{1, 0}, &sum)
	check("error", err != nil && err.Error() == "divide by zero", fmt.Sprint(err))
	_, isServerError := err.(rpc.ServerError)
	check("error_is_server_error", isServerError, fmt.Sprintf("%T", err))

	err = c.Call("Arith.Nope", &Args{1, 2}, &sum)
	check("unknown_method", err != nil && err.Error() == "rpc: can't find method Arith.Nope", fmt.Sprint(err))
	err = c.Call("Nope.Sum", &Args{1, 2}, &sum)
	check("unknown_service", err != nil && err.Error() == "rpc: can't find service Nope.Sum", fmt.Sprint(err))

	// Struct fields meet handler parameters by name, never by position.
	err = c.Call("Arith.Sub", &Swapped{B: 2, A: 10}, &sum)
	check("fields_by_name", err == nil && sum == 8, fmt.Sprint(sum, " ", err))
	err = c.Call("Arith.Sub", &WithExtra{A: 10, B: 3, Extra: "ignored"}, &sum)
	check("extra_field_ignored", err == nil && sum == 7, fmt.Sprint(sum, " ", err))
	err = c.Call("Arith.Sub", &OnlyB{B: 4}, &sum)
	check("missing_field_is_zero", err == nil && sum == -4, fmt.Sprint(sum, " ", err))
	err = c.Call("Arith.Sub", &Args{0, 5}, &sum) // gob leaves the zero A out
	check("zero_field_left_out", err == nil && sum == -5, fmt.Sprint(sum, " ", err))

	// The connection survives errors.
	err = c.Call("Arith.Sum", &Args{1, 2}, &sum)
	check("after_errors", err == nil && sum == 3, fmt.Sprint(sum, " ", err))

	rec := sampleRecord(mode)
	var back Record
	err = c.Call("Echo.Record", &rec, &back)
	check("record", err == nil && reflect.DeepEqual(rec, back), fmt.Sprintf("%+v %v", back, err))

	var zero, zeroBack Record
	zeroBack.Name = "not reset"
	err = c.Call("Echo.Record", &zero, &zeroBack)
	// gob leaves fields the sender omitted (zero values) untouched; jsonrpc sets them.
	expectZero := zero
	if mode != "jsonrpc" {
		expectZero.Name = "not reset"
	}
	check("record_zero", err == nil && reflect.DeepEqual(expectZero, zeroBack), fmt.Sprintf("%+v %v", zeroBack, err))

	for _, v := range []int64{0, -1, math.MinInt64, math.MaxInt64, 1 << 53} {
		var r int64
		err = c.Call("Echo.Int", v, &r)
		check(fmt.Sprint("int_", v), err == nil && r == v, fmt.Sprint(r, " ", err))
	}
	for _, v := range []uint64{0, 127, 128, math.MaxUint64} {
		var r uint64
		err = c.Call("Echo.Uint", v, &r)
		check(fmt.Sprint("uint_", v), err == nil && r == v, fmt.Sprint(r, " ", err))
	}
	for _, v := range []string{"", "plain", "ünïcødé ✓", string(make([]byte, 100000))} {
		var r string
		err = c.Call("Echo.String", v, &r)
		check(fmt.Sprint("string_", len(v)), err == nil && r == v, fmt.Sprint(len(r), " ", err))
	}
	var rb []byte // jsonrpc carries []byte as base64 text
	err = c.Call("Echo.Bytes", []byte{0, 255, 10}, &rb)
	check("bytes", err == nil && bytes.Equal(rb, []byte{0, 255, 10}), fmt.Sprint(rb, " ", err))
	var rf []float64
	err = c.Call("Echo.Floats", []float64{0, -0.5, 1e308, 5e-324}, &rf)
	check("floats", err == nil && reflect.DeepEqual(rf, []float64{0, -0.5, 1e308, 5e-324}), fmt.Sprint(rf, " ", err))
	var rm map[string]int
	err = c.Call("Echo.Map", map[string]int{"a": 1, "b": -2, "c": 0}, &rm)
	check("map", err == nil && reflect.DeepEqual(rm, map[string]int{"a": 1, "b": -2, "c": 0}), fmt.Sprint(rm, " ", err))

	// nil collections are empty ones; -0 keeps its sign.
	var lengths string
	err = c.Call("Echo.Lengths", &Bag{}, &lengths)
	check("nil_collections", err == nil && lengths == "0,0,0", fmt.Sprint(lengths, " ", err))
	err = c.Call("Echo.Lengths", &Bag{Tags: []string{"a"}, Attrs: map[string]int{"x": 1}, Blob: []byte{1, 2}}, &lengths)
	check("collections", err == nil && lengths == "1,1,2", fmt.Sprint(lengths, " ", err))
	var rz []float64
	err = c.Call("Echo.Floats", []float64{math.Copysign(0, -1), 2}, &rz)
	check("negative_zero", err == nil && len(rz) == 2 && rz[0] == 0 && math.Signbit(rz[0]) && rz[1] == 2,
		fmt.Sprint(rz, " ", err))

	// 1,000 concurrent calls from goroutines on this one connection.
	var wg sync.WaitGroup
	var mu sync.Mutex
	bad := 0
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var r int
			if err := c.Call("Arith.Sum", &Args{i, 1000000}, &r); err != nil || r != i+1000000 {
				mu.Lock()
				bad++
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	check("concurrent_1000", bad == 0, fmt.Sprint(bad, " bad"))

	out, _ := json.Marshal(results)
	fmt.Println(string(out))
}

type Tree struct {
	Value    int
	Children []Tree
}

type Opaque struct {
	Name string
	Any  interface{}
}

func golden() {
	// One encoder, as on one connection: type ids and definitions are sent once.
	var buf bytes.Buffer
	enc := gob.NewEncoder(&buf)
	type vector struct {
		Name string `json:"name"`
		Hex  string `json:"hex"`
	}
	var out []vector
	add := func(name string, v interface{}) {
		buf.Reset()
		if err := enc.Encode(v); err != nil {
			panic(err)
		}
		out = append(out, vector{name, hex.EncodeToString(buf.Bytes())})
	}
	add("request", rpc.Request{ServiceMethod: "Arith.Sum", Seq: 0})
	add("request_seq", rpc.Request{ServiceMethod: "Arith.Sum", Seq: 300})
	add("args", Args{10, 20})
	add("args_zero", Args{})
	add("int", 7)
	add("int_zero", 0)
	add("int_neg", -129)
	add("int_min", int64(math.MinInt64))
	add("uint_max", uint64(math.MaxUint64))
	add("float", 17.25)
	add("float_neg", -0.1)
	add("bool", true)
	add("string", "héllo")
	add("bytes", []byte{1, 2, 3})
	add("slice_int", []int{1, -1, 0})
	add("slice_empty", []int{})
	add("map", map[string]int{"k": 5})
	add("array", [3]int{1, 0, 2})
	add("point", Point{1.5, 0})
	add("record", Record{ID: -5, Count: 1 << 40, Name: "r", Points: []Point{{1, 2}}, Inner: Inner{Tags: []string{"t"}},
		Next: &Record{Name: "n"}, Meta: map[string]string{"a": "b"}, Grid: [3]int{0, 1, 0}})
	add("record_again", Record{Flag: true})
	add("tree", Tree{1, []Tree{{2, nil}, {3, []Tree{{4, nil}}}}})
	add("interface", Opaque{"x", 42})
	add("interface_nil", Opaque{"nil", nil})
	add("complex", complex(1.5, -2))
	enc2 := gob.NewEncoder(&buf) // a new connection re-sends definitions, same ids
	buf.Reset()
	enc2.Encode(Args{1, 2})
	out = append(out, vector{"args_new_encoder", hex.EncodeToString(buf.Bytes())})
	j, _ := json.MarshalIndent(out, "", " ")
	fmt.Println(string(j))
}

func main() {
	switch {
	case len(os.Args) == 2 && os.Args[1] == "serve":
		serve()
	case len(os.Args) == 4 && os.Args[1] == "client":
		client(os.Args[2], os.Args[3])
	case len(os.Args) == 5 && os.Args[1] == "hangup":
		hangup(os.Args[2], os.Args[3], os.Args[4])
	case len(os.Args) == 2 && os.Args[1] == "golden":
		golden()
	default:
		fmt.Fprintln(os.Stderr, "usage: gointerop serve | client MODE ADDR | hangup MODE ADDR METHOD | golden")
		os.Exit(2)
	}
}
