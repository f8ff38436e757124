package server

// ConfigError is a problem with one or more settings, named by Keys as
// the configuration file spells them ("history.ttl",
// "channels[2].publish[0]"), so that the binary can show it at the line,
// flag or variable that set the first of them. Its message is complete on
// its own and starts with the key where it is about one.
type ConfigError struct {
	Keys []string
	Err  error
}

func (e *ConfigError) Error() string { return e.Err.Error() }

func (e *ConfigError) Unwrap() error { return e.Err }

// ConfigKeys returns the settings the error is about.
func (e *ConfigError) ConfigKeys() []string { return e.Keys }

var _ error = (*ConfigError)(nil)
