package hooks

// Status is a unit workload status. The zero Status means "leave the status as it is".
type Status struct {
	Name    string // active, blocked, waiting or maintenance
	Message string
}

// IsZero reports whether s is the zero Status.
func (s Status) IsZero() bool { return s == Status{} }

// String returns "name: message" for logs and test failures.
func (s Status) String() string {
	if s.Message == "" {
		return s.Name
	}
	return s.Name + ": " + s.Message
}

// Active returns an active status: the workload is running as configured.
func Active(message string) Status { return Status{Name: "active", Message: message} }

// Blocked returns a blocked status: the operator must act.
func Blocked(message string) Status { return Status{Name: "blocked", Message: message} }

// Waiting returns a waiting status: the unit waits for something outside it (a relation, the
// leader).
func Waiting(message string) Status { return Status{Name: "waiting", Message: message} }

// Maintenance returns a maintenance status: the charm is doing work on the unit.
func Maintenance(message string) Status { return Status{Name: "maintenance", Message: message} }
