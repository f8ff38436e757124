package app

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/heraldrt/herald/server"
)

// DevKeyFile holds the credentials dev mode generated, in the data
// folder, so that a restarted dev server keeps its API key and the tokens
// minted with its secret stay valid.
const DevKeyFile = "dev-credentials.json"

// DevKeys are dev mode's generated credentials.
type DevKeys struct {
	APIKey    string `json:"api_key"`
	JWTSecret string `json:"jwt_secret"`
}

// DevCredentials returns the dev credentials stored in dataDir, creating
// them on first use.
func DevCredentials(dataDir string) (DevKeys, error) {
	k, ok, err := readDevCredentials(dataDir)
	if err != nil || ok {
		return k, err
	}
	k = DevKeys{APIKey: "dev_" + randomHex(16), JWTSecret: randomHex(32)}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return DevKeys{}, fmt.Errorf("create data folder: %w", err)
	}
	b, _ := json.Marshal(k)
	if err := os.WriteFile(filepath.Join(dataDir, DevKeyFile), b, 0o600); err != nil {
		return DevKeys{}, fmt.Errorf("write dev credentials: %w", err)
	}
	return k, nil
}

// PeekDevCredentials is DevCredentials for a check: it reads stored
// credentials but creates nothing; without them, serve would generate
// valid ones, so a check uses stand-ins.
func PeekDevCredentials(dataDir string) (DevKeys, error) {
	k, ok, err := readDevCredentials(dataDir)
	if err != nil || ok {
		return k, err
	}
	return DevKeys{APIKey: "dev_" + strings.Repeat("0", 32), JWTSecret: strings.Repeat("0", 64)}, nil
}

// readDevCredentials returns the dev credentials stored in dataDir; ok is
// false when there are none yet.
func readDevCredentials(dataDir string) (k DevKeys, ok bool, err error) {
	path := filepath.Join(dataDir, DevKeyFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return DevKeys{}, false, nil
	case err != nil:
		return DevKeys{}, false, fmt.Errorf("read dev credentials: %w", err)
	}
	if err := json.Unmarshal(b, &k); err != nil || k.APIKey == "" || k.JWTSecret == "" {
		return DevKeys{}, false, fmt.Errorf("%s is damaged; delete it to get new dev credentials", path)
	}
	return k, true, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// keyed names the setting an error is about.
func keyed(key string, err error) error {
	return &server.ConfigError{Keys: []string{key}, Err: err}
}
