// A minimal stargz snapshotter daemon for the lazy start-up bench's reference row: the Debian
// library (golang-github-containerd-stargz-snapshotter-dev, 0.12) served over containerd's
// snapshots API on a unix socket, to be named as a proxy plugin in containerd's config:
//
//	[proxy_plugins.stargz]
//	  type = "snapshot"
//	  address = "/run/esgz-bench-stargz/stargz.sock"
//
// It never ships with esgz. Build: bench/reference-snapshotter/setup.sh.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/reference"
	"github.com/containerd/containerd/remotes/docker"
	stargzfs "github.com/containerd/stargz-snapshotter/fs"
	"github.com/containerd/stargz-snapshotter/fs/config"
	"github.com/containerd/stargz-snapshotter/fs/source"
	"github.com/containerd/stargz-snapshotter/snapshot"
	"google.golang.org/grpc"
)

func main() {
	address := flag.String("address", "/run/esgz-bench-stargz/stargz.sock", "unix socket to serve the snapshots API on")
	root := flag.String("root", "/var/lib/esgz-bench-stargz", "state root of the snapshotter")
	flag.Parse()
	ctx := context.Background()

	// Registries on localhost / 127.0.0.1 (the bench's registry and its link emulator) over plain HTTP.
	hosts := func(ref reference.Spec) ([]docker.RegistryHost, error) {
		return docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchLocalhost))(ref.Hostname())
	}
	// The library's defaults: prefetch, background fetch, chunk sizes as the stock daemon has them.
	fs, err := stargzfs.NewFilesystem(filepath.Join(*root, "stargz"), config.Config{}, stargzfs.WithGetSources(source.FromDefaultLabels(hosts)))
	if err != nil {
		log.Fatalf("stargz filesystem: %v", err)
	}
	snapshotter, err := snapshot.NewSnapshotter(ctx, filepath.Join(*root, "snapshotter"), fs, snapshot.AsynchronousRemove)
	if err != nil {
		log.Fatalf("stargz snapshotter: %v", err)
	}
	server := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(server, snapshotservice.FromSnapshotter(snapshotter))

	if err := os.MkdirAll(filepath.Dir(*address), 0o700); err != nil {
		log.Fatal(err)
	}
	_ = os.Remove(*address)
	listener, err := net.Listen("unix", *address)
	if err != nil {
		log.Fatalf("listen %s: %v", *address, err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-stop
		server.GracefulStop()
		_ = snapshotter.Close()
	}()
	if err := server.Serve(listener); err != nil {
		log.Fatal(err)
	}
}
