package httpapi

// register declares every route. A test derives its checks from this table (every admin
// route refuses an unauthenticated call) and a golden file lists it.
func (s *Server) register() {
	// Operations.
	s.handle("GET /{$}", publicAccess, s.banner)
	s.handle("GET /debug/info", publicAccess, s.debugInfo)
	s.handle("GET /debug/status", publicAccess, s.debugStatus)
	s.handle("GET /metrics", publicAccess, s.serveMetrics)

	// Patch downloads: the url_template of the deployment guide uses /patches/.
	s.handle("GET /patches/{filename}", publicAccess, s.downloadPatch)
	s.handle("GET /v1/patches/{filename}", publicAccess, s.downloadPatch)

	// Machines.
	s.handle("POST /v1/client/{id}", authTokenAccess, s.enableMachine)
	s.handle("POST /v1/client/{id}/updates", machineAccess, s.checkIn)
	s.handle("DELETE /v1/client/{id}", machineAccess, s.disableMachine)

	// Administration.
	s.handle("POST /v1/admin/login", basicAccess, s.login)
	s.handle("POST /v1/admin/logout", adminAccess, s.logout)
	s.handle("GET /v1/admin/sessions", adminAccess, s.listSessions)
	s.handle("DELETE /v1/admin/sessions", adminAccess, s.revokeUserSessions)
	s.handle("DELETE /v1/admin/sessions/{id}", adminAccess, s.revokeSession)
	s.handle("GET /v1/admin/tiers", adminAccess, s.listTiers)
	s.handle("POST /v1/admin/tiers", adminAccess, s.addTier)
	s.handle("DELETE /v1/admin/tiers/{name}", adminAccess, s.deleteTier)
	s.handle("GET /v1/admin/tiers/{name}/patches", adminAccess, s.tierPatches)
	s.handle("POST /v1/admin/tiers/{name}/promote-all", adminAccess, s.promoteAll)
	s.handle("GET /v1/admin/patches", adminAccess, s.listPatches)
	s.handle("GET /v1/admin/patches/{version}", adminAccess, s.showPatch)
	s.handle("PUT /v1/admin/patches/files/{filename}", adminAccess, s.uploadPatch)
	s.handle("POST /v1/admin/patches/{version}/promote", adminAccess, s.promotePatch)
	s.handle("POST /v1/admin/patches/{version}/block", adminAccess, s.blockPatch)
	s.handle("POST /v1/admin/patches/{version}/unblock", adminAccess, s.unblockPatch)
	s.handle("GET /v1/admin/storage/patches", adminAccess, s.storagePatches)
	s.handle("POST /v1/admin/storage/refresh", adminAccess, s.storageRefresh)
	s.handle("GET /v1/admin/auth-tokens", adminAccess, s.listAuthTokens)
	s.handle("POST /v1/admin/auth-tokens", adminAccess, s.createAuthToken)
	s.handle("DELETE /v1/admin/auth-tokens/{id}", adminAccess, s.revokeAuthToken)
	s.handle("GET /v1/admin/machines/{id}", adminAccess, s.showMachine)
	s.handle("GET /v1/admin/machines/{id}/history", adminAccess, s.machineHistory)
	s.handle("POST /v1/admin/machines/{id}/move", adminAccess, s.moveMachine)
	s.handle("POST /v1/admin/machines/{id}/tags", adminAccess, s.tagMachine)
	s.handle("POST /v1/admin/machines/move", adminAccess, s.moveMachines)
	s.handle("DELETE /v1/admin/machines/{id}", adminAccess, s.removeMachine)
	s.handle("GET /v1/admin/reports/machines", adminAccess, s.reportMachines)
	s.handle("GET /v1/admin/reports/patch-health", adminAccess, s.reportPatchHealth)
	s.handle("GET /v1/admin/reports/kernels", adminAccess, s.reportKernels)
	s.handle("GET /v1/admin/reports/downstream", adminAccess, s.reportDownstream)
	s.handle("GET /v1/admin/reports/downstream/{id}/machines", adminAccess, s.reportDownstreamMachines)
	s.handle("POST /v1/admin/sync/trigger", adminAccess, s.triggerSync)
	s.handle("GET /v1/admin/sync/status", adminAccess, s.syncStatus)
	s.handle("GET /v1/admin/sync/reports", adminAccess, s.syncReports)
	s.handle("GET /v1/admin/sync/bundle", adminAccess, s.exportBundle)
	s.handle("POST /v1/admin/sync/bundle", adminAccess, s.importBundle)
	s.handle("GET /v1/admin/sync-tokens", adminAccess, s.listSyncTokens)
	s.handle("POST /v1/admin/sync-tokens", adminAccess, s.createSyncToken)
	s.handle("DELETE /v1/admin/sync-tokens/{name}", adminAccess, s.revokeSyncToken)
	s.registerRollouts() // api_rollout.go

	// Downstream servers syncing from this one.
	s.handle("GET /v1/sync/patches", syncAccess, s.syncPatches)
	s.handle("POST /v1/sync/machine-reports", syncAccess, s.syncMachineReports)
}
