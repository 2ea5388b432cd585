package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/livepatch-onprem/livepatch/internal/cli"
	"github.com/livepatch-onprem/livepatch/server"
)

// cmdRollout groups the rollout commands.
type cmdRollout struct {
	g *global
}

func (c *cmdRollout) command() *cobra.Command {
	return group("rollout", "Set rollout policies and follow, pause, resume or halt rollouts",
		group("policy", "Set, show and delete the rollout policy of a tier",
			(&cmdRolloutPolicySet{g: c.g}).command(),
			(&cmdRolloutPolicyShow{g: c.g}).command(),
			(&cmdRolloutPolicyDelete{g: c.g}).command(),
		),
		(&cmdRolloutStatus{g: c.g}).command(),
		(&cmdRolloutState{g: c.g, action: "pause", short: "Stop offering a patch to more machines of a tier"}).command(),
		(&cmdRolloutState{g: c.g, action: "resume", short: "Resume a paused or halted rollout"}).command(),
		(&cmdRolloutState{g: c.g, action: "halt", short: "Halt a rollout, as failures would"}).command(),
	)
}

// cmdRolloutPolicySet sets a tier's rollout policy from its flags, replacing any.
type cmdRolloutPolicySet struct {
	g                *global
	flagCanaries     string
	flagSoak         time.Duration
	flagRate         string
	flagInFlight     int
	flagThreshold    int
	flagApplyTimeout time.Duration
	flagWindows      []string
	flagTimeZone     string
}

func (c *cmdRolloutPolicySet) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "set <tier>",
		Short: "Set the rollout policy of a tier (replacing any)",
		Long: `Set the rollout policy of a tier: when its machines get a patch the tier has.
Flags left out impose nothing; the policy replaces the previous one as a whole.`,
		Example: `  livepatch-admin rollout policy set stable --canaries 5 --soak 24h --rate 50/1h \
      --max-in-flight 100 --failure-threshold 10 \
      --window 'mon-fri 22:00-04:00' --time-zone Europe/Paris`,
		Args:              argNames([]string{"<tier>"}),
		RunE:              c.run,
		ValidArgsFunction: c.g.completeTiers(0),
	}
	f := cmd.Flags()
	f.StringVar(&c.flagCanaries, "canaries", "", "machines that get a new patch first: a count (5) or a percentage (2%)")
	f.DurationVar(&c.flagSoak, "soak", 0, "how long after the canaries applied a patch the others wait")
	f.StringVar(&c.flagRate, "rate", "", "most machines offered a new patch per period: COUNT/PERIOD, such as 50/1h")
	f.IntVar(&c.flagInFlight, "max-in-flight", 0, "most machines offered a patch that have not applied it yet")
	f.IntVar(&c.flagThreshold, "failure-threshold", 0, "halt when this percentage of the offered machines failed or timed out")
	f.DurationVar(&c.flagApplyTimeout, "apply-timeout", 0, "how long an offered machine has to apply (default 3h)")
	f.StringArrayVar(&c.flagWindows, "window", nil, "a maintenance window: [DAYS] HH:MM-HH:MM, such as 'sat,sun 01:00-05:00' (repeatable)")
	f.StringVar(&c.flagTimeZone, "time-zone", "", "the windows' IANA time zone (default UTC)")
	return cmd
}

func (c *cmdRolloutPolicySet) run(cmd *cobra.Command, args []string) error {
	p := server.RolloutPolicy{Tier: args[0], Soak: server.Duration(c.flagSoak), MaxInFlight: c.flagInFlight,
		FailureThreshold: c.flagThreshold, ApplyTimeout: server.Duration(c.flagApplyTimeout), TimeZone: c.flagTimeZone}
	if c.flagCanaries != "" {
		v, percent := strings.CutSuffix(c.flagCanaries, "%")
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return cli.Usagef(cmd, "invalid --canaries %q: want a count such as 5 or a percentage such as 2%%", c.flagCanaries)
		}
		if percent {
			p.CanaryPercent = n
		} else {
			p.Canaries = n
		}
	}
	if c.flagRate != "" {
		count, per, ok := strings.Cut(c.flagRate, "/")
		n, err := strconv.Atoi(count)
		d, derr := time.ParseDuration(per)
		if !ok || err != nil || derr != nil || n <= 0 {
			return cli.Usagef(cmd, "invalid --rate %q: want COUNT/PERIOD such as 50/1h", c.flagRate)
		}
		p.RateLimit, p.RatePeriod = n, server.Duration(d)
	}
	for _, w := range c.flagWindows {
		win, err := parseWindow(w)
		if err != nil {
			return cli.Usagef(cmd, "invalid --window %q: %v", w, err)
		}
		p.Windows = append(p.Windows, win)
	}
	if err := p.Check(); err != nil {
		return cli.Usagef(cmd, "%s", server.ErrorMessage(err))
	}
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	out, err := cl.SetRolloutPolicy(cmd.Context(), p)
	if err != nil {
		return err
	}
	return c.g.show(out, func(w io.Writer) {
		fmt.Fprintf(w, "Set the rollout policy of tier %s:\n", out.Tier)
		policyText(w, out)
	})
}

// parseWindow parses "[DAYS] HH:MM-HH:MM", DAYS a comma-separated list of days or day
// ranges (mon-fri).
func parseWindow(s string) (server.Window, error) {
	fields := strings.Fields(s)
	var w server.Window
	if len(fields) == 0 || len(fields) > 2 {
		return w, fmt.Errorf("want [DAYS] HH:MM-HH:MM")
	}
	hours := fields[len(fields)-1]
	start, end, ok := strings.Cut(hours, "-")
	if !ok {
		return w, fmt.Errorf("want HH:MM-HH:MM, not %q", hours)
	}
	w.Start, w.End = start, end
	if len(fields) == 2 {
		days := []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
		for _, d := range strings.Split(fields[0], ",") {
			from, to, isRange := strings.Cut(d, "-")
			i, j := indexOf(days, from), indexOf(days, to)
			if !isRange {
				j = i
			}
			if i < 0 || j < 0 {
				return w, fmt.Errorf("day %q is not one of %s", d, strings.Join(days, ", "))
			}
			for k := i; ; k = (k + 1) % 7 {
				w.Days = append(w.Days, days[k])
				if k == j {
					break
				}
			}
		}
	}
	return w, nil
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

// policyText writes a policy for a person.
func policyText(w io.Writer, p server.RolloutPolicy) {
	tw := newTable(w)
	canaries := "none"
	switch {
	case p.Canaries > 0:
		canaries = strconv.Itoa(p.Canaries) + " machines"
	case p.CanaryPercent > 0:
		canaries = strconv.Itoa(p.CanaryPercent) + "% of the tier"
	}
	fmt.Fprintf(tw, "  canaries:\t%s\n", canaries)
	fmt.Fprintf(tw, "  soak:\t%s\n", orNone(p.Soak > 0, time.Duration(p.Soak).String()))
	fmt.Fprintf(tw, "  rate:\t%s\n", orNone(p.RateLimit > 0, fmt.Sprintf("%d per %s", p.RateLimit, time.Duration(p.RatePeriod))))
	fmt.Fprintf(tw, "  max in flight:\t%s\n", orNone(p.MaxInFlight > 0, strconv.Itoa(p.MaxInFlight)))
	fmt.Fprintf(tw, "  failure threshold:\t%s\n", orNone(p.FailureThreshold > 0, strconv.Itoa(p.FailureThreshold)+"%"))
	timeout := time.Duration(p.ApplyTimeout)
	if timeout == 0 {
		timeout = server.DefaultApplyTimeout
	}
	fmt.Fprintf(tw, "  apply timeout:\t%s\n", timeout)
	if len(p.Windows) == 0 {
		fmt.Fprintf(tw, "  windows:\tany time\n")
	}
	zone := p.TimeZone
	if zone == "" {
		zone = "UTC"
	}
	for _, win := range p.Windows {
		days := "every day"
		if len(win.Days) > 0 {
			days = strings.Join(win.Days, ",")
		}
		fmt.Fprintf(tw, "  window:\t%s %s-%s %s\n", days, win.Start, win.End, zone)
	}
	tw.Flush()
}

func orNone(set bool, v string) string {
	if !set {
		return "none"
	}
	return v
}

// cmdRolloutPolicyShow shows a tier's rollout policy.
type cmdRolloutPolicyShow struct {
	g *global
}

func (c *cmdRolloutPolicyShow) command() *cobra.Command {
	return &cobra.Command{
		Use:               "show <tier>",
		Short:             "Show the rollout policy of a tier",
		Args:              argNames([]string{"<tier>"}),
		RunE:              c.run,
		ValidArgsFunction: c.g.completeTiers(0),
	}
}

func (c *cmdRolloutPolicyShow) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	p, err := cl.RolloutPolicy(cmd.Context(), args[0])
	if err != nil {
		return err
	}
	return c.g.show(p, func(w io.Writer) {
		fmt.Fprintf(w, "Rollout policy of tier %s:\n", p.Tier)
		policyText(w, p)
	})
}

// cmdRolloutPolicyDelete deletes a tier's rollout policy.
type cmdRolloutPolicyDelete struct {
	g *global
}

func (c *cmdRolloutPolicyDelete) command() *cobra.Command {
	return &cobra.Command{
		Use:               "delete <tier>",
		Short:             "Delete the rollout policy of a tier: its machines get patches at once",
		Args:              argNames([]string{"<tier>"}),
		RunE:              c.run,
		ValidArgsFunction: c.g.completeTiers(0),
	}
}

func (c *cmdRolloutPolicyDelete) run(cmd *cobra.Command, args []string) error {
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	if err := cl.DeleteRolloutPolicy(cmd.Context(), args[0]); err != nil {
		return err
	}
	fmt.Fprintf(c.g.stdout, "Deleted the rollout policy of tier %s\n", args[0])
	return nil
}

// cmdRolloutStatus shows where the rollouts of a tier stand.
type cmdRolloutStatus struct {
	g            *global
	flagMachines bool
}

func (c *cmdRolloutStatus) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status <tier> [version]",
		Short: "Show where the rollouts of a tier stand",
		Example: `  livepatch-admin rollout status stable
  livepatch-admin rollout status stable 107.1 --machines`,
		Args:              argNames([]string{"<tier>"}, "[version]"),
		RunE:              c.run,
		ValidArgsFunction: c.g.completeTiers(0),
	}
	cmd.Flags().BoolVar(&c.flagMachines, "machines", false, "list the update state of every machine offered the patch")
	return cmd
}

func (c *cmdRolloutStatus) run(cmd *cobra.Command, args []string) error {
	if c.flagMachines && len(args) < 2 {
		return cli.Usagef(cmd, "--machines needs a version")
	}
	if len(args) == 2 {
		if err := server.CheckVersion(args[1]); err != nil {
			return cli.Usagef(cmd, "%s", server.ErrorMessage(err))
		}
	}
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	if len(args) == 1 {
		rollouts, err := cl.Rollouts(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		return c.g.show(orEmpty(rollouts), func(w io.Writer) {
			if len(rollouts) == 0 {
				fmt.Fprintf(w, "No rollouts in tier %s.\n", args[0])
			}
			for i, r := range rollouts {
				if i > 0 {
					fmt.Fprintln(w)
				}
				rolloutText(w, r)
			}
		})
	}
	r, err := cl.Rollout(cmd.Context(), args[0], args[1])
	if err != nil {
		return err
	}
	return c.g.show(r, func(w io.Writer) {
		rolloutText(w, r.Rollout)
		if c.flagMachines {
			fmt.Fprintln(w)
			tw := newTable(w)
			fmt.Fprintln(tw, "MACHINE\tSTATE\tOFFERED\tREPORTS")
			for _, m := range r.MachineStates {
				state := m.State
				if m.Canary {
					state += " (canary)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s\n", m.MachineID, state, m.OfferedAt.UTC().Format(time.DateTime), m.PatchState, m.PatchVersion)
			}
			tw.Flush()
		}
	})
}

// rolloutText draws a rollout's progress: one bar per phase and count.
func rolloutText(w io.Writer, r server.Rollout) {
	state := r.State
	if r.Reason != "" {
		state += ": " + r.Reason
	}
	fmt.Fprintf(w, "%s in tier %s: %s\n", r.Version, r.Tier, state)
	fmt.Fprintf(w, "  started %s", r.StartedAt.UTC().Format(time.DateTime))
	if !r.CanariesDone.IsZero() {
		fmt.Fprintf(w, ", canaries done %s", r.CanariesDone.UTC().Format(time.DateTime))
	}
	fmt.Fprintln(w, " UTC")
	tw := newTable(w)
	if r.Canaries > 0 {
		fmt.Fprintf(tw, "  canaries\t%s\t%d/%d applied\n", bar(r.CanariesApplied, r.Canaries), r.CanariesApplied, r.Canaries)
	}
	fmt.Fprintf(tw, "  offered\t%s\t%d/%d machines\n", bar(r.Offered, r.Machines), r.Offered, r.Machines)
	fmt.Fprintf(tw, "  downloaded\t%s\t%d/%d offered\n", bar(r.Downloaded, r.Offered), r.Downloaded, r.Offered)
	fmt.Fprintf(tw, "  applied\t%s\t%d/%d offered\n", bar(r.Applied, r.Offered), r.Applied, r.Offered)
	fmt.Fprintf(tw, "  failed\t%s\t%d/%d offered\n", bar(r.Failed, r.Offered), r.Failed, r.Offered)
	fmt.Fprintf(tw, "  timed out\t%s\t%d/%d offered\n", bar(r.TimedOut, r.Offered), r.TimedOut, r.Offered)
	fmt.Fprintf(tw, "  in flight\t\t%d\n", r.InFlight())
	tw.Flush()
}

// bar draws n out of total on 20 columns.
func bar(n, total int) string {
	const width = 20
	filled := 0
	if total > 0 {
		filled = min(width, n*width/total)
	}
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "]"
}

// cmdRolloutState pauses, resumes or halts a rollout.
type cmdRolloutState struct {
	g          *global
	action     string
	short      string
	flagReason string
}

func (c *cmdRolloutState) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:               c.action + " <tier> <version>",
		Short:             c.short,
		Args:              argNames([]string{"<tier>", "<version>"}),
		RunE:              c.run,
		ValidArgsFunction: c.g.completeTiers(0),
	}
	if c.action != "resume" {
		cmd.Flags().StringVar(&c.flagReason, "reason", "", "why, for the rollout status and the audit log")
	}
	return cmd
}

func (c *cmdRolloutState) run(cmd *cobra.Command, args []string) error {
	if err := server.CheckVersion(args[1]); err != nil {
		return cli.Usagef(cmd, "%s", server.ErrorMessage(err))
	}
	cl, err := c.g.admin()
	if err != nil {
		return err
	}
	changed, err := cl.SetRolloutState(cmd.Context(), args[0], args[1], c.action, c.flagReason)
	if err != nil {
		return err
	}
	done := map[string]string{"pause": "Paused", "resume": "Resumed", "halt": "Halted"}[c.action]
	if !changed {
		done = "Already " + strings.ToLower(done)
	}
	fmt.Fprintf(c.g.stdout, "%s the rollout of %s in tier %s\n", done, args[1], args[0])
	return nil
}

// rolloutSummary ends a patch health report with the patch's rollout, when it has one.
func rolloutSummary(w io.Writer, r *server.Rollout) {
	if r == nil {
		return
	}
	state := r.State
	if r.Reason != "" {
		state += " (" + r.Reason + ")"
	}
	fmt.Fprintf(w, "Rollout %s: %d offered, %d downloaded, %d applied, %d failed, %d timed out, %d in flight\n",
		state, r.Offered, r.Downloaded, r.Applied, r.Failed, r.TimedOut, r.InFlight())
}
