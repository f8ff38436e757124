package app

import (
	"testing"

	"github.com/heraldrt/herald/internal/configfile"
)

// FuzzConfigFile feeds any file to the configuration's reader and to what
// checks and compiles each section — the server's channel rules, the
// webhooks, the data sync rules, the engine: nothing panics, and a file
// read without problems either passes or is refused with a message.
func FuzzConfigFile(f *testing.F) {
	for _, s := range []string{
		"addr: 127.0.0.1:8080\ndata_dir: ./data\nchannels:\n  - pattern: \"chat_room_{room_id}\"\n    subscribe: [authenticated]\n    presence: true\n    history: {size: 100, ttl: 24h}\n",
		"webhooks:\n  - name: a\n    url: https://example.com/h\n    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n    events: [message, join]\n    channels: [\"orders_*\"]\n    batch: {size: 10, timeout: 1s}\n",
		"sync:\n  postgres:\n    dsn: postgres://u@127.0.0.1/db\n  tables:\n    - table: public.projects\n      on: [update]\n      omit: [secret]\n      publish:\n        - channel: \"project_{id}\"\n          event: project_updated\n          data: {name: \"{name}\"}\n",
		"engine:\n  nats:\n    urls: [nats://127.0.0.1:4222]\n    replicas: 3\n",
		"engine: badger\nlimits:\n  max_connections_per_user: 3\n  on_connection_limit: close_oldest\n",
		"tls:\n  cert_file: a.pem\n  key_file: b.pem\n",
		"channels: [1, 2]\n", "{", "a: &x [*x]\n", "addr: [\n",
	} {
		f.Add([]byte(s))
	}
	getenv := func(string) (string, bool) { return "", false }
	f.Fuzz(func(t *testing.T, data []byte) {
		var c Config
		if _, problems := configfile.Decode("herald.yaml", data, &c); len(problems) > 0 {
			if problems.Error() == "" {
				t.Fatalf("%q refused without a message", data)
			}
			return
		}
		c.Server.APIKey = "fuzz-api-key-0123456789"
		if err := c.Validate(); err != nil {
			if err.Error() == "" {
				t.Fatalf("%q refused without a message", data)
			}
			return
		}
		c = c.WithDefaults()
		_, _ = c.Webhooks.Compile(getenv)
		_, _, _ = c.Sync.Sync.Compile(getenv)
		_, _ = c.Server.Retention()
		_, _ = c.engineOptions(nil)
	})
}
