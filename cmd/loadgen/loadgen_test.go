package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/agentmeter/agentmeter/cmd/loadgen/load"
	"github.com/agentmeter/agentmeter/internal/ingesttest"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, o options)
		err   string
	}{
		{name: "defaults", check: func(t *testing.T, o options) {
			c := o.cfg
			if c.Target != "localhost:4320" || c.Batch != 100 || c.Streams != 1 || c.Window != 8 ||
				c.Duration != 10*time.Second || c.Events != 0 || c.Mode != load.ModeStream ||
				c.Conversations != 100 || c.Models != 4 || c.Progress != time.Second || o.asJSON {
				t.Fatalf("defaults %+v", o)
			}
		}},
		{name: "events alone lift the time limit", args: []string{"--events", "1000"}, check: func(t *testing.T, o options) {
			if o.cfg.Duration != 0 || o.cfg.Events != 1000 {
				t.Fatalf("duration %s events %d", o.cfg.Duration, o.cfg.Events)
			}
		}},
		{name: "events and duration both bound", args: []string{"--events", "1000", "--duration", "3s"}, check: func(t *testing.T, o options) {
			if o.cfg.Duration != 3*time.Second || o.cfg.Events != 1000 {
				t.Fatalf("duration %s events %d", o.cfg.Duration, o.cfg.Events)
			}
		}},
		{name: "unary json", args: []string{"--mode", "unary", "--json", "--target", "127.0.0.1:9"}, check: func(t *testing.T, o options) {
			if o.cfg.Mode != load.ModeUnary || !o.asJSON || o.cfg.Target != "127.0.0.1:9" {
				t.Fatalf("%+v", o)
			}
		}},
		{name: "remote target refused", args: []string{"--target", "192.0.2.1:4320"}, err: "loopback"},
		{name: "unbounded refused", args: []string{"--duration", "0"}, err: "bounded"},
		{name: "bad mode", args: []string{"--mode", "bidi"}, err: "mode"},
		{name: "stray argument", args: []string{"now"}, err: "unexpected"},
		{name: "scenario", args: []string{"--scenario", "agents", "--duration", "3s", "--agents", "2", "--target", "127.0.0.1:9"}, check: func(t *testing.T, o options) {
			if o.scenario != "agents" || o.scn.Duration != 3*time.Second || o.scn.Agents != 2 || o.scn.Target != "127.0.0.1:9" {
				t.Fatalf("%+v", o.scn)
			}
		}},
		{name: "scenario default duration", args: []string{"--scenario", "agents"}, check: func(t *testing.T, o options) {
			if o.scn.Duration != 30*time.Second {
				t.Fatalf("duration %s", o.scn.Duration)
			}
		}},
		{name: "unknown scenario", args: []string{"--scenario", "chaos"}, err: "only scenario"},
		{name: "scenario with no agents", args: []string{"--scenario", "agents", "--agents", "0"}, err: "agents 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args, io.Discard)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want one mentioning %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, o)
		})
	}
}

// accepter accepts everything; rejectFirst rejects the first event of each batch.
type accepter struct {
	rejectFirst bool
}

func (a accepter) answer(req *pb.RecordRequest) *pb.RecordResponse {
	n := uint32(len(req.GetEvents()))
	if a.rejectFirst {
		return &pb.RecordResponse{Accepted: n - 1, Rejected: []*pb.Rejection{{
			Index: 0, EventId: req.GetEvents()[0].GetEventId(), Field: "llm_call.request_model", Reason: "test"}}}
	}
	return &pb.RecordResponse{Accepted: n}
}

func TestRunJSON(t *testing.T) {
	target := ingesttest.Serve(t, accepter{}.answer)
	var stdout, stderr bytes.Buffer
	code := run([]string{"--target", target, "--events", "2500", "--batch", "100", "--json", "--progress", "0"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	var got map[string]float64
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("stdout %q: %v", stdout.String(), err)
	}
	for key, want := range map[string]float64{"events": 2500, "requests": 25, "accepted": 2500, "duplicates": 0, "rejected": 0, "errors": 0} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
	if got["seconds"] <= 0 || got["events_per_sec"] <= 0 {
		t.Errorf("seconds %v events_per_sec %v", got["seconds"], got["events_per_sec"])
	}
}

func TestRunReportsRejections(t *testing.T) {
	target := ingesttest.Serve(t, accepter{rejectFirst: true}.answer)
	var stdout, stderr bytes.Buffer
	code := run([]string{"--target", target, "--events", "1000", "--batch", "10", "--progress", "0"}, &stdout, &stderr)
	if code != 0 { // rejections are the server's answer, not an error of the run
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "rejected 100;") || !strings.Contains(stderr.String(), "llm_call.request_model") {
		t.Fatalf("stdout %q stderr %q", stdout.String(), stderr.String())
	}
}

func TestRunFailsOnTransportError(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := lis.Addr().String()
	_ = lis.Close()
	if code := run([]string{"--target", target, "--timeout", "300ms"}, io.Discard, io.Discard); code != 1 {
		t.Fatalf("exit %d against a closed port, want 1", code)
	}
	if code := run([]string{"--target", "198.51.100.7:4320"}, io.Discard, io.Discard); code != 2 {
		t.Fatalf("exit %d for a remote target, want 2", code)
	}
}
