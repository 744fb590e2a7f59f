// A jobserver worker in Go (net/http): it leases jobs of external tasks, runs them and
// reports on them, in batches. Run `jobserver serve --external-task double=numbers`, then
// `JOBSERVER_URL=http://127.0.0.1:8000 JOBSERVER_QUEUES=numbers go run .` here.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type Item struct { // of a report: which job, under which lease, and what came of it
	JobID      int64  `json:"job_id"`
	LeaseToken string `json:"lease_token"`
	Result     any    `json:"result,omitempty"`
	Message    string `json:"message,omitempty"`
	failed     bool   // (not sent) the run failed
}

var (
	// What this worker runs, by task name: a job's arguments in, its result (JSON) out.
	handlers = map[string]func(args []json.RawMessage) (any, error){
		"double": func(args []json.RawMessage) (any, error) {
			var n float64
			if len(args) == 0 || json.Unmarshal(args[0], &n) != nil {
				return nil, fmt.Errorf("double takes a number")
			}
			return n * 2, nil
		},
	}
	base   = setting("JOBSERVER_URL", "http://127.0.0.1:8000")
	token  = os.Getenv("JOBSERVER_TOKEN") // a --worker-token, if the server has tokens
	queues = strings.Split(setting("JOBSERVER_QUEUES", "external"), ",")
	batch  = number("JOBSERVER_BATCH", "64") // jobs a lease call takes
	leaseS = number("JOBSERVER_LEASE_S", "30")
	held   sync.Map // job id -> Item: the leases of the jobs running now, to renew
)

func post(path string, body map[string]any, out any) bool { // false (and a log line): failed
	data, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", base+path, bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err == nil {
		defer res.Body.Close()
		if err = fmt.Errorf("%s: HTTP %d", path, res.StatusCode); res.StatusCode == 200 {
			err = json.NewDecoder(res.Body).Decode(out)
		}
	}
	if err != nil {
		log.Print(err)
	}
	return err == nil
}

func loop(stopped context.Context, wg *sync.WaitGroup) { // lease, run, report: until stopped
	defer wg.Done()
	for stopped.Err() == nil {
		var got struct {
			Leases []struct {
				Job struct {
					ID   int64             `json:"id"`
					Task string            `json:"task"`
					Args []json.RawMessage `json:"args"`
				} `json:"job"`
				LeaseToken string `json:"lease_token"`
			} `json:"leases"`
		}
		ask := map[string]any{"queues": queues, "limit": batch, "lease_s": leaseS, "wait_s": 5}
		if !post("/leases", ask, &got) {
			time.Sleep(time.Second) // the server is away: try again
			continue
		}
		items := make([]Item, len(got.Leases))
		var runs sync.WaitGroup
		for i, l := range got.Leases {
			items[i] = Item{JobID: l.Job.ID, LeaseToken: l.LeaseToken}
			held.Store(l.Job.ID, items[i])
			runs.Add(1)
			go func(item *Item, task string, args []json.RawMessage) {
				defer runs.Done()
				if handler, ok := handlers[task]; !ok {
					item.Message, item.failed = "this worker has no task "+task, true
				} else if result, err := handler(args); err != nil {
					item.Message, item.failed = fmt.Sprintf("%v (%T)", err, err), true
				} else {
					item.Result = result
				}
			}(&items[i], l.Job.Task, l.Job.Args)
		}
		runs.Wait()
		reports := map[string][]Item{}
		for _, item := range items {
			path := map[bool]string{false: "/leases/complete", true: "/leases/fail"}[item.failed]
			reports[path] = append(reports[path], item)
		}
		for path, report := range reports { // a failed report: the leases run out, jobs run again
			post(path, map[string]any{"items": report}, new(any))
		}
		for _, item := range items { // renewed until reported
			held.Delete(item.JobID)
		}
	}
}

func setting(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func number(name, fallback string) int {
	n, _ := strconv.Atoi(setting(name, fallback))
	return n
}

func main() {
	// SIGTERM: finish and report the batches in hand, then exit
	stopped, _ := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	go func() { // keep the leases of running jobs (a lost one's report is moot)
		for range time.Tick(time.Duration(leaseS) * time.Second / 3) {
			items := []Item{}
			held.Range(func(_, v any) bool { items = append(items, v.(Item)); return true })
			if len(items) > 0 { // (a failed renewal is logged; the leases may then run out)
				post("/leases/renew", map[string]any{"items": items, "lease_s": leaseS}, new(any))
			}
		}
	}()
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ { // two batches in flight at once
		wg.Add(1)
		go loop(stopped, &wg)
	}
	wg.Wait()
}
