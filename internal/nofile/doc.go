// Package nofile raises a process's open-file limit and counts the
// descriptors it has open. Every connection is a descriptor, so the server
// (to say how many connections it can hold) and the load generator (to open
// as many as a run asks for) both raise the soft limit to the hard one at
// start. It imports nothing of Herald.
package nofile
