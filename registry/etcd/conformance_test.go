package etcd_test

import (
	"context"
	"encoding/json"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lbrpc/lbrpc/registry"
	"github.com/lbrpc/lbrpc/registry/registrytest"
)

func TestConformance(t *testing.T) {
	registrytest.Run(t, func(t *testing.T) registrytest.Source {
		c := startCluster(t)
		cli := c.client(t)
		return registrytest.Source{
			Registry: newRegistry(t, cli, "svc"),
			Set: func(ctx context.Context, nodes []registry.Node) error {
				return setNodes(ctx, cli, "/lbrpc/services/svc/", nodes)
			},
			Fail:    func(context.Context) error { c.fail(); return nil },
			Restore: func(context.Context) error { c.restore(); return nil },
		}
	})
}

// setNodes makes prefix hold exactly nodes, in one transaction. Of nodes
// with the same address the first wins.
func setNodes(ctx context.Context, cli *clientv3.Client, prefix string, nodes []registry.Node) error {
	want := map[string]string{}
	var ops []clientv3.Op
	for _, n := range nodes {
		key := prefix + n.Addr
		if _, dup := want[key]; dup {
			continue
		}
		v, err := json.Marshal(map[string]any{"addr": n.Addr, "weight": n.Weight, "meta": n.Meta})
		if err != nil {
			return err
		}
		want[key] = string(v)
		ops = append(ops, clientv3.OpPut(key, string(v)))
	}
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return err
	}
	for _, kv := range resp.Kvs {
		if _, keep := want[string(kv.Key)]; !keep {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		}
	}
	_, err = cli.Txn(ctx).Then(ops...).Commit()
	return err
}
