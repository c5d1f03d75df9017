// Package server implements the provisioner's gRPC API (proto/provisioner/v1) over a vm.Manager.
// The caller's identity comes from its client certificate (internal/provisioner/mtls): it owns
// the VMs it creates and sees no others.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/mtls"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/state"
	"git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisioner/vm"
	pb "git.brooktrails.org/brooktrails/forgejo-runner-operator/internal/provisionerpb/provisionerv1"
)

// Server is the ProvisionerService.
type Server struct {
	pb.UnimplementedProvisionerServiceServer
	vms *vm.Manager
	// Follow is how a following log stream waits for more output; a poll of the file.
	Follow func(ctx context.Context) error
}

// New returns a Server over vms.
func New(vms *vm.Manager) *Server {
	return &Server{vms: vms, Follow: func(ctx context.Context) error {
		t := time.NewTimer(200 * time.Millisecond)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		}
	}}
}

func operator(ctx context.Context) (string, error) {
	id := mtls.Identity(ctx)
	if id == "" {
		return "", status.Error(codes.Unauthenticated, "no client identity")
	}
	return id, nil
}

// toStatus maps the manager's errors to gRPC codes.
func toStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, vm.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, vm.ErrConflict):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, vm.ErrNoCapacity):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, vm.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, vm.ErrNoLog):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// CreateVM implements pb.ProvisionerServiceServer.
func (s *Server) CreateVM(ctx context.Context, req *pb.CreateVMRequest) (*pb.CreateVMResponse, error) {
	op, err := operator(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetOwner().GetOperator() != "" && req.GetOwner().GetOperator() != op {
		return nil, status.Errorf(codes.PermissionDenied, "owner.operator %q is not the caller %q", req.GetOwner().GetOperator(), op)
	}
	var lease time.Duration
	if req.GetLeaseDuration() != nil {
		lease = req.GetLeaseDuration().AsDuration()
	}
	rec, created, err := s.vms.Create(ctx, vm.CreateRequest{
		IdempotencyKey: req.GetIdempotencyKey(),
		Owner: state.Owner{Operator: op, PoolNamespace: req.GetOwner().GetPoolNamespace(),
			PoolName: req.GetOwner().GetPoolName(), RunnerName: req.GetOwner().GetRunnerName()},
		VCPUs: req.GetSpec().GetVcpus(), MemoryMiB: req.GetSpec().GetMemoryMib(),
		Kernel: req.GetSpec().GetKernel(), RootfsImage: req.GetSpec().GetRootfsImage(),
		ForgejoURL: req.GetRunner().GetForgejoUrl(), RegistrationUUID: req.GetRunner().GetRegistrationUuid(),
		Labels: req.GetRunner().GetLabels(), JobHandle: req.GetRunner().GetJobHandle(),
		Token: req.GetRunnerToken(),
		Lease: lease,
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.CreateVMResponse{Vm: toProto(rec), Created: created}, nil
}

// GetVM implements pb.ProvisionerServiceServer.
func (s *Server) GetVM(ctx context.Context, req *pb.GetVMRequest) (*pb.GetVMResponse, error) {
	op, err := operator(ctx)
	if err != nil {
		return nil, err
	}
	rec, err := s.vms.Get(op, req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.GetVMResponse{Vm: toProto(rec)}, nil
}

// ListVMs implements pb.ProvisionerServiceServer.
func (s *Server) ListVMs(ctx context.Context, req *pb.ListVMsRequest) (*pb.ListVMsResponse, error) {
	op, err := operator(ctx)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListVMsResponse{}
	for _, r := range s.vms.List(op, vm.Filter{PoolNamespace: req.GetPoolNamespace(), PoolName: req.GetPoolName(), RunnerName: req.GetRunnerName()}) {
		resp.Vms = append(resp.Vms, toProto(r))
	}
	return resp, nil
}

// DeleteVM implements pb.ProvisionerServiceServer.
func (s *Server) DeleteVM(ctx context.Context, req *pb.DeleteVMRequest) (*pb.DeleteVMResponse, error) {
	op, err := operator(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.vms.Delete(ctx, op, req.GetId()); err != nil {
		return nil, toStatus(err)
	}
	return &pb.DeleteVMResponse{}, nil
}

// RenewLeases implements pb.ProvisionerServiceServer.
func (s *Server) RenewLeases(ctx context.Context, req *pb.RenewLeasesRequest) (*pb.RenewLeasesResponse, error) {
	op, err := operator(ctx)
	if err != nil {
		return nil, err
	}
	var lease time.Duration
	if req.GetLeaseDuration() != nil {
		lease = req.GetLeaseDuration().AsDuration()
	}
	renewed, missing, err := s.vms.Renew(op, req.GetIds(), lease)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &pb.RenewLeasesResponse{MissingIds: missing}
	for _, r := range renewed {
		resp.Vms = append(resp.Vms, toProto(r))
	}
	return resp, nil
}

// StreamLogs implements pb.ProvisionerServiceServer.
func (s *Server) StreamLogs(req *pb.StreamLogsRequest, stream pb.ProvisionerService_StreamLogsServer) error {
	ctx := stream.Context()
	op, err := operator(ctx)
	if err != nil {
		return err
	}
	path, err := s.vms.ConsoleLog(op, req.GetId())
	if err != nil {
		return toStatus(err)
	}
	f, err := os.Open(path) //nolint:gosec // the driver's console log of a VM the caller owns
	if err != nil {
		return toStatus(fmt.Errorf("open console log: %w", err))
	}
	defer f.Close() //nolint:errcheck // read-only
	buf := make([]byte, 32<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if serr := stream.Send(&pb.StreamLogsResponse{Data: append([]byte(nil), buf[:n]...)}); serr != nil {
				return serr
			}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return toStatus(fmt.Errorf("read console log: %w", err))
		}
		if n > 0 {
			continue
		}
		if !req.GetFollow() {
			return nil
		}
		// At the end of what was written: stop when the VM is gone, else wait for more.
		if _, gerr := s.vms.Get(op, req.GetId()); gerr != nil {
			return nil
		}
		if werr := s.Follow(ctx); werr != nil {
			return toStatus(werr)
		}
	}
}

// GetCapacity implements pb.ProvisionerServiceServer.
func (s *Server) GetCapacity(ctx context.Context, _ *pb.GetCapacityRequest) (*pb.GetCapacityResponse, error) {
	if _, err := operator(ctx); err != nil {
		return nil, err
	}
	c := s.vms.Capacity()
	return &pb.GetCapacityResponse{VcpusTotal: c.VCPUsTotal, VcpusUsed: c.VCPUsUsed, MemoryMibTotal: c.MemoryMiBTotal,
		MemoryMibUsed: c.MemoryMiBUsed, Vms: uint32(c.VMs)}, nil //nolint:gosec // a host's VM count fits
}

var phases = map[state.Phase]pb.VMState{
	state.PhaseCreating: pb.VMState_VM_STATE_CREATING,
	state.PhaseRunning:  pb.VMState_VM_STATE_RUNNING,
	state.PhaseStopped:  pb.VMState_VM_STATE_STOPPED,
	state.PhaseFailed:   pb.VMState_VM_STATE_FAILED,
}

// toProto renders a record; it has no token to leak.
func toProto(r state.Record) *pb.VM {
	return &pb.VM{
		Id: r.ID, IdempotencyKey: r.IdempotencyKey, Driver: r.Driver,
		Spec:   &pb.VMSpec{Vcpus: r.VCPUs, MemoryMib: r.MemoryMiB, Kernel: r.Kernel, RootfsImage: r.RootfsImage},
		Runner: &pb.Runner{ForgejoUrl: r.ForgejoURL, RegistrationUuid: r.RegistrationUUID, Labels: r.Labels, JobHandle: r.JobHandle},
		Owner: &pb.Owner{Operator: r.Owner.Operator, PoolNamespace: r.Owner.PoolNamespace, PoolName: r.Owner.PoolName,
			RunnerName: r.Owner.RunnerName},
		State: phases[r.Phase], Message: r.Message, TokenDelivered: r.TokenDelivered,
		CreateTime: timestamppb.New(r.CreateTime), LeaseExpireTime: timestamppb.New(r.LeaseExpireTime),
		GuestReadyTime: timestamp(r.GuestReadyTime), RunnerStartTime: timestamp(r.RunnerStartTime),
		RunnerExitTime: timestamp(r.RunnerExitTime), RunnerExitCode: int32(r.RunnerExitCode), //nolint:gosec // an exit code fits
	}
}

// timestamp leaves a moment not reached yet unset.
func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
