// Command gen writes the dashboards of package grafana as JSON files into
// deploy/grafana/dashboards (run by `go generate ./deploy/grafana`, which
// `make dashboards` does).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/agentmeter/agentmeter/deploy/grafana"
)

func main() { os.Exit(run()) }

func run() int {
	files, err := grafana.Files()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		return 1
	}
	for name, b := range files {
		path := filepath.Join("dashboards", name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			return 1
		}
	}
	return 0
}
